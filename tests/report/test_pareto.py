"""The Pareto panel: which trials are on the fronts, from hand-made results rows."""

from __future__ import annotations

import math

import pandas as pd

from mmtune.report._pareto import draw_pareto, front_rows, get_pareto_info, pareto_mask


def _rows(trials: list[tuple[str, str, list[float], float, float]]) -> pd.DataFrame:
    rows = []
    for tid, model, vals, flops, params in trials:
        for e, v in enumerate(vals, 1):
            rows.append({"trial_id": tid, "model": model, "epoch": e, "val_mse": v, "flops_per_sample": flops,
                         "params": params, "train_samples_per_s": 10.0 * e, "infer_ms_per_clip": 2.0,
                         "config/lr": 0.001 * e})
    return pd.DataFrame(rows)


def test_pareto_mask_by_hand() -> None:
    assert pareto_mask([1, 2, 3, 2], [5, 3, 4, 3]) == [True, True, False, True]  # ties both stay
    assert pareto_mask([1, 1], [2, 3]) == [True, False]  # same cost, worse error: dominated
    assert pareto_mask([], []) == []


def test_fronts_per_family_and_across() -> None:
    df = _rows([
        ("a1", "conv_tau", [120.0, 100.0], 4e9, 3e6),   # best val 100 (epoch 2), dear
        ("a2", "conv_tau", [110.0], 1e9, 1e6),          # cheaper, worse: on the conv_tau front
        ("a3", "conv_tau", [130.0], 2e9, 2e6),          # dominated by a2
        ("b1", "simple_lstm", [150.0], 0.5e9, 5e6),     # cheapest in FLOPs: on the overall FLOPs front
    ])
    info = get_pareto_info(df, ["conv_tau", "simple_lstm"])
    by = {p.trial_id: p for p in info.points}
    assert by["a1"].val_mse == 100.0 and by["a1"].train_samples_per_s == 15.0  # best epoch; median speed
    assert by["a1"].config == {"lr": 0.002}  # the best epoch's row
    assert by["a2"].front["flops_per_sample"] and by["a1"].front["flops_per_sample"]
    assert not by["a3"].front["flops_per_sample"] and not by["a3"].front_all["params"]
    assert by["b1"].front["flops_per_sample"] and by["b1"].front_all["flops_per_sample"]
    assert not by["b1"].front_all["params"]  # 5 M params and the worst MSE: a2 dominates it
    assert [p.trial_id for p in front_rows(info)] == ["a2", "a1", "b1"]
    fig = draw_pareto(info)
    assert fig.layout.xaxis.type == "log" and len(fig.data) > 0


def test_trials_without_cost_are_named_not_drawn() -> None:
    df = _rows([("a1", "conv_tau", [100.0], 1e9, 1e6), ("a2", "conv_tau", [90.0], math.nan, math.nan)])
    info = get_pareto_info(df, ["conv_tau"])
    assert [p.trial_id for p in info.points] == ["a1"]
    assert "1 of 2 trials recorded no cost" in info.notes[0]
    empty = get_pareto_info(pd.DataFrame(), ["conv_tau"])
    assert empty.points == [] and draw_pareto(empty).layout.annotations


def test_the_panel_plots_costs_that_trials_report(tmp_path) -> None:
    """The panel finds its costs in what a real trial reports: the rows a TrialLog writes for a tiny
    trained model, through results.parquet's layout, give a point with every cost, the trial's own."""
    from mmtune.experiment import TrialRecord, results_frame
    from mmtune.report._pareto import COSTS, get_pareto_info
    from mmtune.search.trial_log import TrialLog
    from mmtune.training.config import build_trial
    from mmtune.training.loop import Trainer

    trial = build_trial("simple_lstm", "small", train_overrides={"epochs": 1, "batch_size": 4, "device": "cpu"},
                        data_overrides={"train_size": 8, "val_size": 4, "test_size": 4})
    trainer = Trainer(trial, progress=False)
    log = TrialLog(trial, str(tmp_path / "tb"), {"node_ip": "127.0.0.1", "hostname": "here", "node_id": "n0"})
    rows: list = []
    trainer.fit(lambda result, tr: rows.append({**log.epoch(result, tr), "trial_id": "t0", "training_iteration": 1}))
    frame = results_frame([TrialRecord("t0", "TERMINATED", {"model": "simple_lstm"}, rows, None, str(tmp_path))])
    info = get_pareto_info(frame, ["simple_lstm"])
    assert len(info.points) == 1, info.notes
    point = info.points[0]
    assert {k: getattr(point, k) for k in COSTS} == {k: rows[0][k] for k in COSTS}


def _section(html: str) -> str:
    """The report's "Accuracy against cost" section, up to the next <h2>."""
    start = html.index("<h2>Accuracy against cost</h2>")
    return html[start:html.index("<h2>", start + 1)]


def test_the_fixture_fronts(make_exp, synthetic) -> None:
    from mmtune.report._load import load_experiment

    exp = load_experiment(make_exp())
    assert all(c in exp.results for c in synthetic.COST_COLUMNS)  # results.parquet carries the cost
    info = get_pareto_info(exp.results, exp.models)
    assert {p.trial_id for p in front_rows(info)} == synthetic.FRONT
    by = {p.trial_id: p for p in info.points}
    assert set(by) == {"s1", "s2", "s3", "t1", "t2", "t3", "t4"}  # l1 crashed, l2 diverged: no best val MSE
    assert by["t4"].val_mse == 52.0 and by["t4"].front_all == {"flops_per_sample": True, "params": True}
    assert by["s1"].train_samples_per_s == synthetic.TRAIN_SIZE / synthetic.ITER_S
    assert by["t2"].params == synthetic.COST["t2"][0] and by["t2"].infer_ms_per_clip == synthetic.COST["t2"][2]


def test_report_section_lists_the_front(make_exp, tmp_path, synthetic) -> None:
    import re

    from mmtune.report import build_report

    section = _section(build_report(make_exp(), tmp_path / "r.html").read_text())
    assert 'id="fig-pareto"' in section
    table = section[section.index("<table>"):section.index("</table>")]
    trials = set(re.findall(r"<td>([a-z]\d)</td>", table))
    assert trials == synthetic.FRONT  # s2 and t3 are dominated: drawn, not listed
    assert "<td>s3</td>" in table and "GFLOPs / training sample" in table


def test_report_says_when_the_results_have_no_cost(make_exp, tmp_path) -> None:
    from mmtune.report import build_report

    section = _section(build_report(make_exp(cost=False), tmp_path / "r.html").read_text())
    assert "has no cost columns" in section and "before mmtune recorded what each trial costs" in section
    assert "fig-pareto" not in section and "<table>" not in section
