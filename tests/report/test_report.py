"""The report's records from a synthetic experiment, partial data, and the HTML it writes."""

from __future__ import annotations

import math
import re
import subprocess
import sys

import pytest

from mmtune.errors import MMTuneError
from mmtune.experiment import SWEEP_FILE, Outcome
from mmtune.report import build_report, default_out
from mmtune.report._curves import draw_curves, get_curves_info
from mmtune.report._flow import draw_flow, get_flow_info
from mmtune.report._frames import animation_gif, get_frames_info, strip_png
from mmtune.report._horizon import draw_horizon, get_horizon_info
from mmtune.report._leaderboard import REFERENCES, get_baseline_info, get_leaderboard_info, get_reference_info
from mmtune.report._load import load_experiment, trial_table
from mmtune.report._params import draw_importance, draw_parallel, get_importance_info, get_parallel_info
from mmtune.report._summary import get_summary_info

COMPLETED, DIVERGED, FAILED = Outcome.COMPLETED, Outcome.DIVERGED, Outcome.FAILED
STOPPED_EARLY = Outcome.STOPPED_EARLY

# --- records --------------------------------------------------------------------------------------

def test_trial_outcomes_and_best(make_exp):
    t = trial_table(load_experiment(make_exp()).results).set_index("trial_id")
    assert t.loc["s3", "outcome"] == STOPPED_EARLY and t.loc["t3", "outcome"] == STOPPED_EARLY
    assert t.loc["l1", "outcome"] == FAILED
    assert t.loc["l2", "outcome"] == DIVERGED and t.loc["t4", "outcome"] == DIVERGED
    assert t.loc["s1", "outcome"] == COMPLETED
    # Best is the minimum over epochs (t4 reached 52 before going NaN), with its epoch.
    assert t.loc["t4", "best_val_mse"] == 52.0 and t.loc["t4", "best_epoch"] == 2
    assert t.loc["t2", "best_val_mse"] == 28.0 and t.loc["t2", "best_epoch"] == 3
    assert math.isnan(t.loc["l2", "best_val_mse"])


def test_summary_counts_and_cost(make_exp, synthetic):
    TRIALS, ITER_S = synthetic.TRIALS, synthetic.ITER_S
    s = get_summary_info(load_experiment(make_exp()))
    assert s.models == ["simple_lstm", "conv_lstm", "conv_tau"]
    assert s.trials == len(TRIALS) == 9
    assert s.outcomes[STOPPED_EARLY] == 2 and s.outcomes[DIVERGED] == 2 and s.outcomes[FAILED] == 1
    assert s.outcomes[COMPLETED] == 4 and sum(s.outcomes.values()) == len(TRIALS)
    epochs = sum(len(t[3]) for t in TRIALS)
    assert s.trial_hours == pytest.approx(epochs * ITER_S / 3600)
    assert s.resources_per_trial == {"cpu": 2.0, "gpu": 0.0}  # sweep.json's effective settings
    assert s.cpu_hours == pytest.approx(2 * s.trial_hours) and s.gpu_hours == 0.0
    assert s.wall_seconds == 3600.0 and s.status == "completed" and s.num_trials_planned == synthetic.SAMPLES
    assert s.versions == synthetic.HARDWARE["versions"] and "versions" not in s.hardware  # under hardware
    assert (s.started, s.ended) == (synthetic.STARTED, "2026-11-20T11:00:00+0000")
    assert s.models_without_result == ["conv_lstm"]
    assert any("conv_lstm: no completed trial" in n for n in s.notes)


def test_leaderboard_best_per_model(make_exp, synthetic):
    TEST_MSE = synthetic.TEST_MSE
    info = get_leaderboard_info(load_experiment(make_exp()), k=2)
    assert [r.trial_id for r in info.models["conv_tau"]] == ["t2", "t1"]
    assert [r.trial_id for r in info.models["simple_lstm"]] == ["s1", "s2"]
    assert info.models["conv_lstm"] == []
    best = info.models["conv_tau"][0]
    assert best.val["mse_frame"] == 28.0
    assert best.val["mse_pixel255"] == pytest.approx(28.0 * 65025 / 4096)
    assert best.test is not None and best.test["mse_frame"] == TEST_MSE["conv_tau"]
    assert best.trial_config is not None and best.trial_config["model"] == "conv_tau"
    assert info.models["conv_tau"][1].test is None
    assert best.params["conv_tau.flow"] == "farneback" and best.params["lr"] == 3e-3
    assert any("conv_lstm" in n for n in info.notes)


def test_reference_units(make_exp, synthetic):
    TEST_MSE = synthetic.TEST_MSE
    info = get_reference_info(load_experiment(make_exp()))
    rows = {r.label: r for r in info.rows}
    tau = rows["TAU"]
    assert tau.mse_frame == 24.60 and tau.mse_pixel255 == pytest.approx(24.60 * 65025 / 4096)
    assert tau.epochs == "200" and "OpenSTL" in tau.source
    assert rows["ConvTAU+flow"].mse_pixel255 == 1520.0
    assert rows["ConvTAU+flow"].mse_frame == pytest.approx(1520.0 * 4096 / 65025)
    assert {r.label for r in REFERENCES} == {"SimpleLSTM", "ConvLSTM", "ConvTAU", "ConvTAU+flow", "TAU"}
    ours = rows["conv_tau (this sweep)"]
    assert ours.ours and ours.mse_frame == TEST_MSE["conv_tau"]
    assert ours.mse_pixel255 == pytest.approx(TEST_MSE["conv_tau"] * 65025 / 4096)
    assert ours.epochs == "best at epoch 3 of 3"
    assert "conv_lstm (this sweep)" not in rows and any("conv_lstm" in n for n in info.notes)


def test_baselines_and_verdicts(make_exp, synthetic, tmp_path):
    exp = load_experiment(make_exp())
    info = get_baseline_info(exp)
    base = synthetic.BASELINE_MSE
    assert [r.name for r in info.rows] == sorted(base, key=base.__getitem__)  # best first
    assert [r.name for r in info.rows if r.best] == ["mean_frame"] and info.test_size == 64
    # simple_lstm (57.0) loses to the mean frame (35.0); conv_tau (29.5) beats it
    assert info.verdicts["simple_lstm"].ratio == pytest.approx(57.0 / 35.0)
    assert info.losers == ["simple_lstm"] and info.verdicts["conv_tau"].beats
    bars = [r for r in get_reference_info(exp).rows if r.kind == "baseline"]
    assert {r.label for r in bars} == {f"baseline: {k}" for k in base}
    assert next(r for r in bars if r.label == "baseline: blank").mse_frame == 40.0
    text = build_report(make_exp(), tmp_path / "r.html").read_text()
    assert "simple_lstm: DOES NOT BEAT the best baseline" in text
    assert ("conv_tau: test mse_frame 29.5 (per-frame; 468 per-pixel 0-255) = 0.84x the best baseline "
            "(mean_frame, mse_frame 35.0)") in text
    assert "No model of this sweep beats" not in text


def test_all_models_losing_is_said_once_in_words(make_exp, tmp_path):
    exp = make_exp()
    path = exp / "baselines.json"
    path.write_text(path.read_text().replace('"mse_frame": 35.0', '"mse_frame": 20.0'))
    info = get_baseline_info(load_experiment(exp))
    assert sorted(info.losers) == ["conv_tau", "simple_lstm"]
    assert "No model of this sweep beats the best trivial baseline" in build_report(exp, tmp_path / "r.html").read_text()


def test_curves_mark_asha_and_diverged(make_exp):
    info = get_curves_info(load_experiment(make_exp()))
    by_id = {t.trial_id: t for t in info.traces}
    assert by_id["t3"].outcome == STOPPED_EARLY and by_id["t3"].epochs == [1]
    assert by_id["t4"].outcome == DIVERGED and by_id["t4"].last_finite_epoch == 2
    assert by_id["l2"].last_finite_epoch is None
    fig = draw_curves(info)
    names = [tr.name for tr in fig.data if tr.showlegend is not False]
    assert any("ASHA" in (n or "") for n in names) and any("diverged" in (n or "") for n in names)
    dashed = [tr for tr in fig.data if tr.mode == "lines+markers" and tr.line.dash == "dash" and tr.x[0] is not None]
    # the dashed curves are those of the trials ASHA stopped, by name in their hover
    assert sorted(t.trial_id for t in info.traces for tr in dashed if f" {t.trial_id} (" in tr.hovertemplate) \
        == sorted(t.trial_id for t in info.traces if t.outcome == STOPPED_EARLY) == ["s3", "t3"]


def test_a_trial_cut_at_the_time_budget_is_counted_and_drawn_as_such(make_exp, tmp_path):
    import dataclasses

    from mmtune.experiment import CUT_KEY, read_results, read_sweep, write_results, write_sweep

    exp = make_exp()
    df = read_results(exp)
    df[CUT_KEY] = df["trial_id"] == "t3"  # t3 stopped after 1 of 3 epochs: now the budget's doing, not ASHA's
    write_results(exp, df)
    write_sweep(exp, dataclasses.replace(read_sweep(exp), budget={
        "budget": "1h", "budget_s": 3600.0, "used_s": 3601.0, "sweep_s": 3650.0, "ended_by_budget": True,
        "trials_started": 9, "refused": 0, "cut": 1}))
    info = get_curves_info(load_experiment(exp))
    by_id = {t.trial_id: t for t in info.traces}
    assert by_id["t3"].outcome is Outcome.CUT_AT_BUDGET and by_id["s3"].outcome == STOPPED_EARLY
    assert any("cut when the sweep's time budget ran out" in n for n in info.notes)
    fig = draw_curves(info)
    dashdot = [tr for tr in fig.data if tr.mode == "lines+markers" and tr.line.dash == "dashdot" and tr.x[0] is not None]
    assert len(dashdot) == 1 and " t3 (cut at the time budget)" in dashdot[0].hovertemplate
    assert any(tr.name == "cut at the time budget (dash-dot)" for tr in fig.data)
    s = get_summary_info(load_experiment(exp))
    assert s.outcomes[Outcome.CUT_AT_BUDGET] == 1 and s.outcomes[STOPPED_EARLY] == 1
    assert s.budget is not None and s.budget.endswith("after 9 trials; 1 cut at the budget, at their last finished epoch")
    assert "cut at the time budget: 1" in build_report(exp, tmp_path / "r.html").read_text()


def test_params_and_importance(make_exp):
    exp = load_experiment(make_exp())
    par = get_parallel_info(exp, "conv_tau")
    names = {a.name: a for a in par.axes}
    assert set(names) == {"lr", "conv_tau.N_T", "conv_tau.flow"}  # config/model is constant: left out
    assert names["lr"].label == "log10(lr)"
    assert names["conv_tau.flow"].ticktext == ["farneback", "none"]
    assert sorted(par.val_mse) == [28.0, 30.0, 52.0, 70.0]
    imp = get_importance_info(exp, "conv_tau")
    assert set(imp.importances) == {"lr", "conv_tau.N_T", "conv_tau.flow"}
    assert sum(imp.importances.values()) == pytest.approx(1.0) and imp.evaluator
    assert imp.n_trials == 4 and "ASHA" in (imp.note or "")
    none = get_importance_info(exp, "conv_lstm")
    assert none.importances == {} and "2 or more" in (none.note or "")
    assert get_parallel_info(exp, "conv_lstm").axes == []
    for f in (draw_parallel(get_parallel_info(exp, "conv_lstm")), draw_importance(none)):
        assert len(f.data) == 0 and f.layout.annotations  # empty figure with its note


def test_horizon_flow_frames(make_exp):
    exp = load_experiment(make_exp())
    hz = get_horizon_info(exp)
    assert set(hz.lines) == {"simple_lstm", "conv_tau"} and len(hz.lines["conv_tau"].mse_frame) == 10
    # each tested model has a line in the MSE panel (x) and in the SSIM panel (x2)
    assert sorted((tr.name, tr.xaxis) for tr in draw_horizon(hz).data) == [
        ("conv_tau", "x"), ("conv_tau", "x2"), ("simple_lstm", "x"), ("simple_lstm", "x2")]
    flow = get_flow_info(exp)
    assert flow.param == "conv_tau.flow" and flow.model == "conv_tau"
    best = {c.choice: c.best_val_mse for c in flow.choices}
    assert best == {"farneback": 28.0, "none": 30.0} and flow.note is None  # both best at epoch 3
    assert [list(tr.x) for tr in draw_flow(flow).data] == [["farneback", "none"]]  # one bar per choice
    fr = get_frames_info(exp, "conv_tau")
    assert fr is not None and fr.pred.shape == (10, 64, 64)
    assert strip_png(fr)[:8] == b"\x89PNG\r\n\x1a\n"
    gif = animation_gif(fr)
    assert gif[:6] == b"GIF89a"
    from io import BytesIO

    from PIL import Image
    assert Image.open(BytesIO(gif)).n_frames == 20
    assert get_frames_info(exp, "conv_lstm") is None


# --- partial data ---------------------------------------------------------------------------------

@pytest.mark.parametrize("missing", [
    ("results.parquet",), ("best_configs.json", "test_metrics.json"), ("predictions",), ("sweep.json",),
    ("results.parquet", "predictions", "test_metrics.json"), ("baselines.json",),
])
def test_partial_experiment_builds_with_notes(make_exp, tmp_path, missing, check_html):
    exp = make_exp(missing=missing)
    out = build_report(exp, tmp_path / "r.html")
    text = out.read_text()
    for name in missing:
        assert f"{name} is missing" in text or f"{name}/ is missing" in text
    check_html(out)


def test_running_sweep_is_reported_as_such(make_exp, tmp_path):
    exp = make_exp(status="running")
    s = get_summary_info(load_experiment(exp))
    assert s.status == "running" and s.wall_seconds > 0  # counted from the start up to now
    text = build_report(exp, tmp_path / "r.html").read_text()
    assert "Sweep status: running" in text and "still running" in text


def test_empty_records_draw_empty_figures(make_exp):
    exp = load_experiment(make_exp(missing=("results.parquet", "test_metrics.json")))
    for f in (draw_curves(get_curves_info(exp)), draw_horizon(get_horizon_info(exp)), draw_flow(get_flow_info(exp))):
        assert len(f.data) == 0 and len(f.layout.annotations) == 1


def test_corrupt_files_are_notes(make_exp, tmp_path):
    exp = make_exp()
    (exp / "results.parquet").write_bytes(b"PAR1 not really")
    (exp / "test_metrics.json").write_text("{ half")
    (exp / "predictions" / "conv_tau.npz").write_bytes(b"junk")
    text = build_report(exp, tmp_path / "r.html").read_text()
    assert "results.parquet could not be read" in text and "test_metrics.json could not be read" in text
    assert "predictions/conv_tau.npz could not be read" in text


def test_nothing_usable_raises_one_line(tmp_path):
    with pytest.raises(MMTuneError, match="does not exist"):
        build_report(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MMTuneError, match="not a sweep"):
        build_report(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(MMTuneError, match="nothing usable"):
        build_report(tmp_path / "bad")


# --- the page -------------------------------------------------------------------------------------

def test_html_is_self_contained_and_balanced(make_exp, check_html):
    exp = make_exp()
    out = build_report(exp)
    assert out == default_out(exp) == exp / "report.html"
    p = check_html(out)
    text = out.read_text()
    models = load_experiment(exp).models
    panels = {"reference", "pareto", "curves", "anytime", "horizon", "flow"} | {f"{k}-{m}" for m in models for k in ("parallel", "importance")}
    assert sorted(p.plot_ids) == sorted(f"fig-{name}" for name in panels)  # each panel once, by its name
    assert sorted(re.findall(r'Plotly\.newPlot\(\s*"([^"]+)"', text)) == sorted(p.plot_ids)  # each one drawn
    assert text.count("data:image/png;base64,") >= 2 and text.count("data:image/gif;base64,") == 2
    for label in ("MSE/frame (OpenSTL, [0,1], sum over 64×64)", "MSE/pixel (0–255)",
                  "Colonna &amp; Manganaro 2023", "stopped early (ASHA)", "conv_lstm: no completed trial"):
        assert label in text


def test_out_paths(make_exp, tmp_path):
    exp = make_exp()
    assert build_report(exp, tmp_path / "reports" / "x.html") == tmp_path / "reports" / "x.html"
    assert build_report(exp, tmp_path / "reports" / "named") == tmp_path / "reports" / "named.html"
    assert build_report(exp, str(tmp_path / "reports") + "/") == tmp_path / "reports" / "synthetic-sweep.html"


def _mmtune(*args: str) -> subprocess.CompletedProcess[str]:
    # A subprocess each: mmtune.cli.main() registers the optional subcommands again on every call.
    return subprocess.run([sys.executable, "-m", "mmtune.cli", *args], capture_output=True, text=True, timeout=120)


def test_cli(make_exp, tmp_path):
    exp = make_exp()
    ok = _mmtune("report", str(exp), "--out", str(tmp_path / "cli.html"))
    assert ok.returncode == 0, ok.stderr
    assert str(tmp_path / "cli.html") in ok.stdout and (tmp_path / "cli.html").exists()
    bad = _mmtune("report", str(tmp_path / "missing"))
    assert bad.returncode == 2
    assert bad.stderr.startswith("mmtune: error:") and bad.stderr.count("\n") == 1, bad.stderr


@pytest.mark.parametrize("sweep,expected", [
    # the layout before schema 1 (run_search.py wrote it until the schema module)
    ({"name": "old", "status": "completed", "started": "2026-12-01T18:10:25+0000", "args": {}}, "no schema version"),
    ({"schema": 99, "name": "future"}, "has schema 99; this mmtune reads schema 1 only"),
    ([], "no schema version"),
])
def test_older_or_foreign_experiment_is_one_clear_error(make_exp, tmp_path, sweep, expected):
    import json

    exp = make_exp()
    (exp / SWEEP_FILE).write_text(json.dumps(sweep))
    with pytest.raises(MMTuneError, match=expected):
        build_report(exp, tmp_path / "r.html")
    bad = _mmtune("report", str(exp), "--out", str(tmp_path / "cli.html"))
    assert bad.returncode == 2 and not (tmp_path / "cli.html").exists()
    assert bad.stderr.count("\n") == 1 and expected in bad.stderr and "run the sweep again" in bad.stderr, bad.stderr


def test_sweep_json_is_checked_by_its_schema(make_exp, tmp_path):
    """A schema-1 sweep.json with a key the schema does not have is noted by name, not silently used."""
    import json

    exp = make_exp()
    meta = json.loads((exp / SWEEP_FILE).read_text())
    (exp / SWEEP_FILE).write_text(json.dumps({**meta, "resources_per_trial": {"cpu": 8}}))
    e = load_experiment(exp)
    assert e.sweep is None and any("unknown keys ['resources_per_trial']" in n for n in e.notes)
    assert "unknown keys" in build_report(exp, tmp_path / "r.html").read_text()


def test_flow_note_when_budgets_differ(make_exp):
    import pandas as pd

    exp = make_exp()
    df = pd.read_parquet(exp / "results.parquet")
    df = df[~((df["trial_id"] == "t2") & (df["epoch"] == 3))]  # farneback's best now comes from epoch 2
    df.loc[df["trial_id"] == "t2", "stopped_early"] = True
    df.to_parquet(exp / "results.parquet")
    flow = get_flow_info(load_experiment(exp))
    assert {c.choice: c.best_epoch for c in flow.choices} == {"farneback": 2, "none": 3}
    assert flow.note is not None and "different epochs" in flow.note and STOPPED_EARLY.label in flow.note


def test_summary_states_the_objective_the_budget_and_the_warm_start(make_exp, tmp_path):
    import dataclasses

    from mmtune.experiment import read_sweep, write_sweep

    exp = make_exp()
    plain = get_summary_info(load_experiment(exp))
    assert (plain.objective, plain.budget, plain.warm_start) == ("mse", None, None)
    meta = dataclasses.replace(
        read_sweep(exp), objective="mse+flops",
        budget={"budget": "30m", "budget_s": 1800.0, "used_s": 1712.4, "sweep_s": 1790.0, "ended_by_budget": True,
                "trials_started": 7},
        warm_start={"source": "/x/earlier", "known": 5, "incompatible": [{"trial_id": "q1", "why": "w"}],
                    "enqueued": [{"trial_id": "a1", "params": {}, "val_mse": 30.0},
                                 {"trial_id": "b2", "params": {}, "val_mse": 31.0}]})
    write_sweep(exp, meta)
    s = get_summary_info(load_experiment(exp))
    assert s.budget == ("30m (1800 s) planned for the whole sweep; the search used 28m32s (1712 s), the whole "
                        "sweep with its test split 29m50s; the budget ended the sweep after 7 trials")
    assert s.warm_start == ("from /x/earlier: its 5 fitting trials seeded the study, 2 ran first (a1, b2); "
                            "1 did not fit the space and were left out")
    html = build_report(exp, tmp_path / "r.html").read_text()
    for text in ("Time budget", "28m32s", "Warm start", "2 ran first (a1, b2)", "FLOPs per training sample (multi"):
        assert text in html, text


def test_summary_states_the_final_phase_and_the_training_share(make_exp, tmp_path):
    import dataclasses

    from mmtune.experiment import read_sweep, write_sweep

    exp = make_exp()
    plain = get_summary_info(load_experiment(exp))
    assert (plain.final_phase, plain.training_share) == (None, None)  # a sweep.json without them
    final = {"share": 0.5, "no_search": False, "start": "trial t2's epoch-3 checkpoint, continued", "seconds": 1200.4,
             "threads": 2, "train_samples": 4000, "best_val_mse": 26.5, "ran": True}
    write_sweep(exp, dataclasses.replace(read_sweep(exp), final=final, training_share=0.623))
    s = get_summary_info(load_experiment(exp))
    assert s.training_share == "the trials and the final phase spent 62 % of the machine's time in training steps"
    assert s.final_phase == ("trial t2's epoch-3 checkpoint, continued, for 1200 s on 2 thread(s): 4000 clips, "
                             "best val mse_frame 26.50 (50% of the time budget)")
    html = build_report(exp, tmp_path / "r.html").read_text()
    for text in ("Final phase", "continued, for 1200 s on 2 thread(s)", "Time in training steps", "62 % of the"):
        assert text in html, text
    write_sweep(exp, dataclasses.replace(read_sweep(exp), final={**final, "ran": False}, training_share=0.4))
    s = get_summary_info(load_experiment(exp))
    assert s.final_phase == "not run (trial t2's epoch-3 checkpoint, continued): too little of the budget was left"
    assert s.training_share == "the trials spent 40 % of the machine's time in training steps"


NO_TORCH = """
import sys
sys.modules["torch"] = None  # any `import torch` now fails
from mmtune.cli import main
sys.exit(main(["report", sys.argv[1], "--out", sys.argv[2]]))
"""


def test_mmtune_report_reads_a_sweep_without_torch(make_exp, tmp_path) -> None:
    # The report only reads JSON, Parquet and PNGs: no torch in its imports (nor the CLI's).
    exp, out = make_exp(), tmp_path / "r.html"
    r = subprocess.run([sys.executable, "-c", NO_TORCH, str(exp), str(out)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Predicted frames" in out.read_text() and "Against the trivial baselines" in out.read_text()


def test_importance_distributions_come_from_space_yaml(make_exp):
    """The study rebuilt for the importances samples from space.yaml's distributions, read by the
    space parser (`search.params.space_params`), not guessed from the values: simple_lstm's hidden is
    a categorical of [32, 64, 128] there (its values alone read as an int range), and lr keeps its
    log range 1e-4..1e-1 though simple_lstm's trials reached only 1e-2. No study.db helps here."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    from mmtune.report._params import _completed, _model_params, _rebuilt_study

    exp = load_experiment(make_exp(missing=("study.db",)))
    assert exp.study_path is None
    trials = _completed(exp, "simple_lstm")
    cols, _ = _model_params(trials)
    dists = _rebuilt_study(exp, "simple_lstm", trials, cols).trials[0].distributions
    assert dists["simple_lstm.hidden"] == CategoricalDistribution([32, 64, 128])
    assert dists["lr"] == FloatDistribution(1e-4, 1e-1, log=True)
