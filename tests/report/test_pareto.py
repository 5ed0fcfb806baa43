"""The Pareto panel: which trials are on the fronts, from hand-made results rows."""

from __future__ import annotations

import math

import pandas as pd
import pytest

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
    """The panel drawn from trials' reported rows (through results_frame, results.parquet's layout) plots
    every trial at its best epoch and draws as fronts exactly the non-dominated trials, worked out by
    hand below for each cost: per family (a line in the family's group) and across families (the
    dotted black line). The two costs have different fronts, so a panel that drew one cost's front on
    the other's axis, or a family's front as the overall one, is caught."""
    from mmtune.experiment import TrialRecord, results_frame
    from mmtune.report._pareto import COSTS

    # trial: (family, val MSE per epoch, GFLOPs per sample, M params)
    made_up = {
        "a": ("conv_tau", [120.0, 100.0], 1.0, 4.0),  # best epoch 2 (100)
        "b": ("conv_tau", [90.0], 2.0, 1.0),
        "c": ("conv_tau", [95.0], 3.0, 2.0),  # b is cheaper and better in both costs
        "d": ("conv_tau", [80.0], 4.0, 3.0),
        "e": ("conv_lstm", [150.0], 0.5, 5.0),
        "f": ("conv_lstm", [140.0], 2.5, 0.5),
    }
    records = [TrialRecord(tid, "TERMINATED", {"model": fam},
                           [{"model": fam, "epoch": e, "training_iteration": e, "val_mse": v, "epochs_planned": 2,
                             "flops_per_sample": gflops * 1e9, "params": mparams * 1e6}
                            for e, v in enumerate(vals, 1)], None, str(tmp_path / tid))
               for tid, (fam, vals, gflops, mparams) in made_up.items()]
    # By hand. GFLOPs: conv_tau a(1, 100) b(2, 90) d(4, 80), c(3, 95) is beaten by b; conv_lstm e(0.5, 150)
    # and f(2.5, 140); across families b(2, 90) beats f. M params: conv_tau b(1, 90) d(3, 80), a(4, 100)
    # and c(2, 95) beaten by b; conv_lstm f(0.5, 140) beats e(5, 150); across: f, b, d.
    fronts = {"flops_per_sample": ({"conv_tau": "abd", "conv_lstm": "ef"}, "eabd"),
              "params": ({"conv_tau": "bd", "conv_lstm": "f"}, "fbd")}
    best = {tid: (min(vals), gflops, mparams) for tid, (_, vals, gflops, mparams) in made_up.items()}

    def line(ids: str, cost: int) -> tuple[list[float], list[float]]:
        """(costs, val MSEs) of the trials `ids`, cheapest first: a front's line."""
        pts = sorted((best[t] for t in ids), key=lambda p: p[cost])
        return [p[cost] for p in pts], [p[0] for p in pts]

    fig = draw_pareto(get_pareto_info(results_frame(records), ["conv_tau", "conv_lstm"]))
    for col, key in enumerate(COSTS, start=1):
        cost = 1 if key == "flops_per_sample" else 2  # the drawn unit: GFLOPs, M params
        axis = "x" if col == 1 else f"x{col}"
        traces = [t for t in fig.data if t.xaxis == axis]

        family, overall = fronts[key]
        for fam, ids in family.items():
            dots = next(t for t in traces if t.mode == "markers" and t.name == fam)
            mine = [tid for tid, v in made_up.items() if v[0] == fam]
            assert sorted(dots.text) == mine  # every trial of the family is a dot...
            drawn = {tid: (x, y) for tid, x, y in zip(dots.text, dots.x, dots.y, strict=True)}
            assert drawn == {tid: (pytest.approx(best[tid][cost]), best[tid][0]) for tid in mine}  # ...at its best epoch
            lines = next(t for t in traces if t.mode == "lines" and t.legendgroup == fam)
            assert (list(lines.x), list(lines.y)) == line(ids, cost), f"{key}: {fam}'s front"
        dotted = next(t for t in traces if t.mode == "lines" and t.legendgroup == "front")
        assert (list(dotted.x), list(dotted.y)) == line(overall, cost), f"{key}: the front across families"


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
