"""The report of an experiment directory that a real tiny sweep (search_spaces/smoke.yaml) made in this run."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mmtune.report import build_report
from mmtune.report._leaderboard import get_leaderboard_info, get_reference_info
from mmtune.report._load import load_experiment, trial_table
from mmtune.report._summary import get_summary_info

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]  # a few minutes on 2 CPU cores; the Ray sweeps run one at a time


@pytest.fixture(scope="session")
def real_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Run the smoke sweep once per session; (its experiment directory, its stderr)."""
    if not (REPO / "run_search.py").exists():
        pytest.skip("run_search.py is not there yet")
    storage = tmp_path_factory.mktemp("sweeps")
    proc = subprocess.run(
        [sys.executable, "run_search.py", "--space", "search_spaces/smoke.yaml", "--name", "report-test",
         "--storage", str(storage), "--verbose", "0"],
        cwd=REPO, capture_output=True, text=True, timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return storage / "report-test", proc.stderr


def test_sweep_writes_its_report(real_sweep):
    """run_search.py builds the report after the sweep (search does not import report: the CLI
    hands it `report_after_sweep`), names it on stderr, and the page says what the sweep's own files
    say: every family of the space with its number of trials in results.parquet, and for each tested
    family the trial with the lowest val MSE in results.parquet (the one test_metrics.json tested) with
    its test mse_frame, in the reference table and in the verdict against the baselines."""
    exp, stderr = real_sweep
    assert "the report failed" not in stderr
    assert f"report: {exp / 'report.html'}" in stderr
    html = (exp / "report.html").read_text()
    results = pd.read_parquet(exp / "results.parquet")
    families = yaml.safe_load((exp / "space.yaml").read_text())["model"]["choices"]
    trials = results.groupby("model")["trial_id"].nunique()
    assert set(trials.index) <= set(families) and trials.sum() > 0
    searched = ", ".join(f"{m} ({trials.get(m, 0)} trials)" for m in families)
    assert f"<td>Models searched</td><td>{searched}</td>" in html
    metrics = json.loads((exp / "test_metrics.json").read_text())
    tested = {m: e for m, e in metrics.items() if isinstance(e, dict) and isinstance(e.get("test"), dict)}
    assert tested
    for model, entry in tested.items():
        rows = results[results["model"] == model]
        best = rows.loc[rows["val_mse"].idxmin(), "trial_id"]
        mse = entry["test"]["mse_frame"]
        assert entry["trial_id"] == best
        row = (rf'<tr class="tested"><td>{model} \(this sweep\)</td><td>this sweep, trial {best}</td>'
               rf'(?:(?!</tr>).)*<td class="num">{mse:,.2f}</td></tr>')
        assert re.search(row, html), f"no reference row of {model}, trial {best}, test mse_frame {mse:.2f}"
        assert re.search(rf"{model}: [^<:]+: test mse_frame {mse:.1f} ", html), f"no verdict of {model}"


def test_report_of_a_real_sweep(real_sweep, tmp_path, check_html, render):
    exp, _ = real_sweep
    t0 = time.perf_counter()
    out = build_report(exp, tmp_path / "real.html")
    seconds = time.perf_counter() - t0
    print(f"report of the smoke sweep: {seconds:.1f} s, {out.stat().st_size / 1e6:.1f} MB")
    assert seconds < 60
    check_html(out)

    e = load_experiment(exp)
    trials = trial_table(e.results)
    summary = get_summary_info(e)
    assert summary.status == "completed"
    assert summary.trials == trials["trial_id"].nunique() > 0
    assert sum(summary.outcomes.values()) == summary.trials
    assert set(summary.models) >= set(e.best_configs)
    assert math.isfinite(summary.cpu_hours) and summary.cpu_hours > 0

    best = json.loads((exp / "best_configs.json").read_text())
    board = get_leaderboard_info(e)
    for model, entry in best.items():
        top = board.models[model][0]
        assert top.val["mse_frame"] == pytest.approx(entry["val_mse"], rel=1e-6)
    refs = {r.label: r for r in get_reference_info(e).rows}
    for model, entry in json.loads((exp / "test_metrics.json").read_text()).items():
        if isinstance(entry.get("test"), dict):
            assert refs[f"{model} (this sweep)"].mse_frame == pytest.approx(entry["test"]["mse_frame"])

    page = render(out, "real-sweep")
    assert page.console_errors == []
    plots = page.plots()
    assert plots and all(plots.values()), f"plots without an svg: {[k for k, ok in plots.items() if not ok]}"
