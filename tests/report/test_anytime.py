"""The anytime panel (best val MSE so far against seconds and training FLOPs): its record from hand-made rows,
the fixture experiment, other runs beside it, and the CLI's --beside."""

from __future__ import annotations

import math
import subprocess
import sys
from typing import Any

import pandas as pd
import pytest

from mmtune.errors import MMTuneError
from mmtune.experiment import ClusterInfo, EffectiveSettings, RunRecord, SweepMeta
from mmtune.report import build_report
from mmtune.report._anytime import (
    X_FLOPS,
    X_SECONDS,
    Y_LABEL,
    anytime_of,
    draw_anytime,
    get_anytime_info,
    run_label,
)
from mmtune.report._load import load_experiment

STARTED = "2026-11-20T10:00:00+0000"
T0 = 1_795_168_800  # STARTED in seconds since the epoch
NAN = math.nan


def _meta(args: dict[str, Any] | None = None, final: dict[str, Any] | None = None) -> SweepMeta:
    return SweepMeta(
        name="hand", models=("conv_tau",), args=args or {},
        effective=EffectiveSettings(4, 3, 1, 2, 1, 1.0, 0.0, {}),
        space="s.yaml", space_copy="space.yaml", storage="/x", exp_dir="/x/hand",
        cluster=ClusterInfo(None, 2.0, 0.0, 1, 2.0, 0.0), hardware={}, started=STARTED,
        runs=(RunRecord(STARTED, False),), status="completed", final=final)


# (trial_id, epoch, seconds after STARTED (NaN: never reported), val_mse, FLOPs per clip, clips, phase),
# deliberately not in time order.
ROWS = [
    ("a", 1, 100, 50.0, 1e9, 10, "search"),
    ("b", 1, 50, NAN, 2e9, 5, "search"),  # first in time; diverged: its training counts, its value does not
    ("a", 2, 200, 40.0, 1e9, 10, "search"),
    ("b", 2, 150, 45.0, 2e9, 5, "search"),
    ("final", 3, 300, 42.0, 1e9, 100, "final"),  # worse than the best so far: the curve stays at 40
    ("final", 4, 400, 30.0, 1e9, 100, "final"),
    ("c", 0, NAN, NAN, NAN, NAN, "search"),  # failed before its first report
]


def _frame(rows: list[tuple[Any, ...]] = ROWS) -> pd.DataFrame:
    return pd.DataFrame([{"trial_id": t, "model": "conv_tau", "epoch": e, "timestamp": T0 + s, "val_mse": v,
                          "flops_per_sample": f, "train_samples": n, "phase": p}
                         for t, e, s, v, f, n, p in rows])


def test_record_by_hand() -> None:
    info = get_anytime_info(_frame(), _meta(final={"ran": True}))
    # In time order b1 (50 s, NaN), a1, b2, a2, final, final: points from the first finite val MSE on.
    assert info.x_seconds == [100.0, 150.0, 200.0, 300.0, 400.0]  # since sweep.json's start, not the first row
    assert info.best_val_mse == [50.0, 45.0, 40.0, 40.0, 30.0]  # the running minimum
    # FLOPs per clip x clips, every row counted (b1 diverged, yet trained 5 clips of 2 GFLOPs)
    assert info.x_flops == [2e10, 3e10, 4e10, 1.4e11, 2.4e11]
    assert info.total_flops == 2.4e11
    assert info.final == [False, False, False, True, True]
    assert info.trial_ids == ["a", "b", "a", "final", "final"]
    assert info.label == "search (TPE + ASHA) + final phase" and info.name == "hand"
    assert info.notes == []


def test_flops_fall_back_to_the_data_train_size_or_leave_the_axis_out() -> None:
    old = _frame([r[:5] + (NAN, "search") for r in ROWS[:4]])  # a sweep from before train_samples was recorded
    info = get_anytime_info(old, _meta(), train_size=64)
    assert info.x_flops == [64 * 3e9, 64 * 5e9, 64 * 6e9] and info.total_flops == 64 * 6e9
    assert any("each counts the data's train_size, 64 clips" in n for n in info.notes)
    unknown = get_anytime_info(old, _meta())
    assert unknown.x_flops == [] and math.isnan(unknown.total_flops) and unknown.best_val_mse == [50.0, 45.0, 40.0]
    assert any("the FLOPs axis leaves this run out" in n for n in unknown.notes)
    no_cost = get_anytime_info(_frame().drop(columns="flops_per_sample"), _meta())
    assert no_cost.x_flops == [] and any("no flops_per_sample" in n for n in no_cost.notes)
    fig = draw_anytime([no_cost])
    assert [tr.xaxis for tr in fig.data if tr.x[0] is not None] == ["x"]  # drawn against seconds only
    assert any("no run recorded its training FLOPs" in a.text for a in fig.layout.annotations)


def test_without_sweep_json_seconds_count_from_the_first_trial() -> None:
    df = _frame().assign(time_total_s=[30.0, 20.0, 60.0, 40.0, 10.0, 20.0, NAN])
    info = get_anytime_info(df, None)
    # b started at 50 - 20 = 30 s, the earliest start of any reported row
    assert info.x_seconds == [70.0, 120.0, 170.0, 270.0, 370.0]
    assert info.label == "unknown run (no sweep.json)" and "first trial's start" in info.notes[0]


@pytest.mark.parametrize("args,final,label", [
    ({}, None, "TPE + ASHA"),
    ({"sampler": "tpe", "scheduler": "asha"}, {"ran": True, "no_search": False},
     "search (TPE + ASHA) + final phase"),
    ({"sampler": "random", "scheduler": "fifo"}, None, "random + FIFO"),
    ({"sampler": "random", "scheduler": "fifo"}, {"ran": False}, "random + FIFO"),  # the final phase did not run
    ({"no_search": True}, {"ran": True, "no_search": True}, "no search: the space's default config"),
])
def test_run_label(args: dict[str, Any], final: dict[str, Any] | None, label: str) -> None:
    assert run_label(_meta(args, final)) == label


def test_empty_input_gives_a_note_and_an_empty_figure() -> None:
    for df, note in ((pd.DataFrame(), "no per-epoch results"),
                     (_frame(ROWS[-1:]), "no row of results.parquet has a report time"),
                     (_frame([("b", 1, 50, NAN, 2e9, 5, "search")]), "no row has a finite val MSE")):
        info = get_anytime_info(df, _meta())
        assert info.x_seconds == info.x_flops == info.best_val_mse == info.final == [] and note in info.notes[-1]
        fig = draw_anytime([info])
        assert len(fig.data) == 0 and len(fig.layout.annotations) == 1
    assert len(draw_anytime([]).data) == 0


def test_draw_one_step_line_per_run_and_panel() -> None:
    here = get_anytime_info(_frame(), _meta(final={"ran": True}))
    other = get_anytime_info(_frame(ROWS[:4]), _meta({"no_search": True}), name="nosearch")
    fig = draw_anytime([here, other])
    lines = [tr for tr in fig.data if tr.x[0] is not None]
    no_search, search = "no search: the space's default config (nosearch)", "search (TPE + ASHA) + final phase (hand)"
    assert sorted((tr.name, tr.xaxis) for tr in lines) == [(no_search, "x"), (no_search, "x2"), (search, "x"),
                                                           (search, "x2")]
    assert all(tr.line.shape == "hv" for tr in lines)
    assert list(lines[0].marker.size) == [0, 0, 0, 9, 9]  # the final phase's points are drawn, the search's not
    assert any(tr.name == "final phase (diamonds)" for tr in fig.data)
    assert fig.layout.yaxis.title.text == Y_LABEL == "best val mse_frame so far (per-frame MSE, OpenSTL)"
    assert fig.layout.xaxis.title.text == X_SECONDS and fig.layout.xaxis2.title.text == X_FLOPS
    assert fig.layout.xaxis2.type == "log"


def test_the_fixture_experiment(make_exp, synthetic) -> None:
    info = anytime_of(load_experiment(make_exp()))
    # s1 (trial 0) reports epoch 1 at 60 + 10 s: the first finite val MSE
    assert info.x_seconds[:3] == [70.0, 80.0, 90.0] and info.best_val_mse[:3] == [80.0, 60.0, 55.0]
    assert info.best_val_mse[-1] == 28.0 and not any(info.final)
    # results.parquet has no train_samples: each epoch counts space.yaml's train_size
    reported = [(synthetic.COST[tid][1], len(vals)) for tid, _, _, vals, _ in synthetic.TRIALS]
    assert info.total_flops == sum(f * n for f, n in reported) * synthetic.TRAIN_SIZE == info.x_flops[-1]
    assert info.label == "TPE + ASHA"


def _section(html: str) -> str:
    start = html.index("<h2>Anytime: best validation MSE so far</h2>")
    return html[start:html.index("<h2>", start + 1)]


def test_report_section_with_runs_beside(make_exp, tmp_path) -> None:
    exp, other = make_exp(), make_exp(missing=("predictions",))
    one = _section(build_report(exp, tmp_path / "one.html").read_text())
    assert 'id="fig-anytime"' in one and one.count("<td>synthetic-sweep</td>") == 1
    # best 28.00 (t2's epoch 3, reported at 60 x 7 + 30 s), the last report t4's epoch 3 at 60 x 9 + 30 s
    row = one[one.index("<td>synthetic-sweep</td>"):]
    assert row.startswith('<td>synthetic-sweep</td><td>TPE + ASHA</td><td class="num">28.00</td>'
                          '<td class="num">450</td><td class="num">570</td>')
    two = _section(build_report(exp, tmp_path / "two.html", beside=[other]).read_text())
    assert two.count("<td>synthetic-sweep</td>") == 2  # a row per run in the table under the figure
    with pytest.raises(MMTuneError, match="beside the report's sweep: .*does not exist"):
        build_report(exp, tmp_path / "three.html", beside=[tmp_path / "nope"])
    assert not (tmp_path / "three.html").exists()


def test_cli_beside_a_folder_that_is_not_an_experiment(make_exp, tmp_path) -> None:
    (tmp_path / "plain").mkdir()
    proc = subprocess.run([sys.executable, "-m", "mmtune.cli", "report", str(make_exp()), "--out",
                           str(tmp_path / "r.html"), "--beside", str(tmp_path / "plain")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and not (tmp_path / "r.html").exists()
    assert proc.stderr.startswith("mmtune: error: cannot draw") and proc.stderr.count("\n") == 1, proc.stderr
    assert "plain" in proc.stderr and "not a sweep's experiment directory" in proc.stderr
