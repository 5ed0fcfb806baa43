"""The leaderboard (top-k trials per model), the trivial baselines, and the best test MSE beside
published numbers and those baselines."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import plotly.graph_objects as go

from mmtune._num import as_finite, is_finite
from mmtune.data.spec import MOVING_MNIST, ClipSpec
from mmtune.experiment import BestConfig, Outcome, TestResult
from mmtune.metrics.units import frame_to_pixel255, pixel255_to_frame
from mmtune.metrics.verdict import BASELINES, Verdict, verdict
from mmtune.report._load import Experiment, trial_table

MSE_FRAME_LABEL = "MSE/frame (OpenSTL, [0,1], sum over 64×64)"
MSE_PIXEL_LABEL = "MSE/pixel (0–255)"
MAE_FRAME_LABEL = "MAE/frame (OpenSTL)"

# The val and test metrics of one leaderboard row, in this order, with their column labels.
METRICS: tuple[tuple[str, str], ...] = (
    ("mse_frame", MSE_FRAME_LABEL),
    ("mse_pixel255", MSE_PIXEL_LABEL),
    ("mae_frame", MAE_FRAME_LABEL),
    ("ssim", "SSIM"),
    ("psnr", "PSNR (dB)"),
)
_VAL_COLUMNS = {"mse_frame": "best_val_mse", "mse_pixel255": "val_mse_pixel255", "mae_frame": "val_mae",
                "ssim": "val_ssim", "psnr": "val_psnr"}


class Reference(NamedTuple):
    """A published Moving MNIST test MSE, with where it comes from."""

    label: str
    source: str
    epochs: int
    mse_pixel255: float
    mse_frame: float
    unit: str  # the unit the source reports in; the other one is converted


def _per_pixel(label: str, value: float) -> Reference:
    return Reference(label, "Colonna & Manganaro 2023, 5-epoch table", 5, value, pixel255_to_frame(value),
                     MSE_PIXEL_LABEL)


REFERENCES: tuple[Reference, ...] = (
    _per_pixel("SimpleLSTM", 2478.0),
    _per_pixel("ConvLSTM", 1927.0),
    _per_pixel("ConvTAU", 1647.0),
    _per_pixel("ConvTAU+flow", 1520.0),
    Reference("TAU", "OpenSTL benchmark (Tan et al. 2023)", 200, frame_to_pixel255(24.60), 24.60, MSE_FRAME_LABEL),
)


def clip_spec(exp: Experiment) -> ClipSpec:
    """The clip spec sweep.json records (Moving MNIST's for a sweep from before it was recorded)."""
    recorded = exp.sweep.clip_spec if exp.sweep is not None else None
    return ClipSpec(**recorded) if recorded else MOVING_MNIST


class LeaderRow(NamedTuple):
    """One trial on the leaderboard."""

    rank: int
    trial_id: str
    outcome: Outcome | None  # None: only best_configs.json knows of the trial
    best_epoch: int | None
    epochs: int
    val: dict[str, float]  # METRICS keys, at the best epoch
    test: dict[str, float] | None  # METRICS keys; only for the trial whose checkpoint was tested
    params: dict[str, Any]  # the searched parameters (config/ columns without the prefix)
    trial_config: dict[str, Any] | None  # the full nested config, where best_configs.json has it (its best trial)


class LeaderboardInfo(NamedTuple):
    """The top-k trials of each model, best val MSE first."""

    k: int
    models: dict[str, list[LeaderRow]]
    notes: list[str]


class ReferenceRow(NamedTuple):
    """One bar of the comparison: this sweep's best test MSE of a model, a published number or a baseline."""

    label: str
    source: str
    epochs: str
    mse_pixel255: float
    mse_frame: float
    ours: bool
    kind: str = "published"  # ours | published | baseline


class BaselineRow(NamedTuple):
    """One trivial predictor on the test split."""

    name: str
    description: str
    test: dict[str, float]  # METRICS keys
    best: bool  # the lowest test mse_frame of the baselines


class BaselineInfo(NamedTuple):
    """The baselines of the test split, and each tested model set beside the best of them."""

    rows: list[BaselineRow]
    test_size: int | None
    verdicts: dict[str, Verdict]  # per tested model
    notes: list[str]

    @property
    def losers(self) -> list[str]:
        """The tested models that do not beat the best baseline."""
        return [m for m, v in self.verdicts.items() if not v.beats]


def get_baseline_info(exp: Experiment) -> BaselineInfo:
    """Read baselines.json's test split; compare every tested model's test mse_frame with its best."""
    base = exp.baselines
    split = base.splits.get("test") if base else None
    if base is None or split is None or not split.metrics:
        return BaselineInfo([], None, {}, ["No baselines (baselines.json is missing or has no test split): the "
                                           "models' numbers cannot be set beside a blank or mean frame."])
    descriptions = {**BASELINES, **base.descriptions}
    clean = {k: {m: as_finite(v.get(m)) for m, _ in METRICS} for k, v in split.metrics.items()}
    best = min((k for k in clean if is_finite(clean[k]["mse_frame"])), key=lambda k: clean[k]["mse_frame"], default="")
    rows = [BaselineRow(k, str(descriptions.get(k, "")), clean[k], k == best)
            for k in sorted(clean, key=lambda k: (not is_finite(clean[k]["mse_frame"]), clean[k]["mse_frame"]))]
    verdicts = {}
    for model in exp.models:
        test = _test_metrics(exp.test_metrics.get(model))
        if is_finite(test["mse_frame"]):
            verdicts[model] = verdict(test["mse_frame"], clean, clip_spec(exp).pixels)
    return BaselineInfo(rows, split.size, verdicts, [])


class ReferenceInfo(NamedTuple):
    """This sweep's best test MSE per model beside the published references."""

    rows: list[ReferenceRow]
    notes: list[str]


def _test_metrics(entry: TestResult | None) -> dict[str, float]:
    """METRICS of a test result (NaN where absent; per-pixel MSE converted from per-frame if need be)."""
    test = (entry.test if entry is not None else None) or {}
    out = {k: as_finite(test.get(k)) for k, _ in METRICS}
    if not is_finite(out["mse_pixel255"]) and is_finite(out["mse_frame"]):
        out["mse_pixel255"] = frame_to_pixel255(out["mse_frame"])
    return out


def get_leaderboard_info(exp: Experiment, k: int = 5) -> LeaderboardInfo:
    """Rank each model's trials by their best val MSE (over all epochs) and keep the top `k`.

    The trial whose checkpoint was tested (test_metrics.json) is always listed, with its test metrics.
    """
    trials = trial_table(exp.results)
    notes: list[str] = []
    models: dict[str, list[LeaderRow]] = {}
    for model in exp.models:
        tested, best = exp.test_metrics.get(model), exp.best_configs.get(model)
        g = trials[trials["model"] == model].sort_values("best_val_mse", na_position="last", kind="stable")
        rows = _ranked(g, k, tested, best)
        if not rows and best is not None:  # no per-epoch results, but the sweep did record a best config
            val = {m: math.nan for m, _ in METRICS}
            val.update(mse_frame=as_finite(best.val_mse), mse_pixel255=as_finite(best.val_mse_pixel255))
            rows.append(LeaderRow(1, best.trial_id, None, best.best_epoch, 0, val,
                                  _test_metrics(tested) if tested else None, dict(best.params), best.config))
        if not rows:
            notes.append(f"{model}: no trial with a finite val MSE, nothing to rank.")
        elif not tested:
            notes.append(f"{model}: no test metrics (test_metrics.json has no entry): test columns are empty.")
        models[model] = rows
    return LeaderboardInfo(k=k, models=models, notes=notes)


def _ranked(g: Any, k: int, tested: TestResult | None, best: BestConfig | None) -> list[LeaderRow]:
    """The top `k` rows of one model's trial table `g` (sorted), and its tested trial wherever it ranks."""
    tested_id = tested.trial_id if tested else (best.trial_id if best else "")
    rows: list[LeaderRow] = []
    for rank, (_, t) in enumerate(g.iterrows(), start=1):
        if not is_finite(t["best_val_mse"]) or (rank > k and t["trial_id"] != tested_id):
            continue
        val = {m: as_finite(t.get(col)) for m, col in _VAL_COLUMNS.items()}
        if not is_finite(val["mse_pixel255"]) and is_finite(val["mse_frame"]):
            val["mse_pixel255"] = frame_to_pixel255(val["mse_frame"])
        params = {c[len("config/"):]: t[c] for c in g.columns if c.startswith("config/") and _present(t[c])}
        rows.append(LeaderRow(
            rank=rank, trial_id=t["trial_id"], outcome=t["outcome"],
            best_epoch=None if t["best_epoch"] is None or not is_finite(t["best_epoch"]) else int(t["best_epoch"]),
            epochs=int(t["epochs"]), val=val,
            test=_test_metrics(tested) if tested and t["trial_id"] == tested_id else None, params=params,
            trial_config=best.config if best is not None and best.trial_id == t["trial_id"] else None,
        ))
    return rows


def _present(x: Any) -> bool:
    return not (x is None or (isinstance(x, float) and math.isnan(x)))


def get_reference_info(exp: Experiment) -> ReferenceInfo:
    """Each model's best test MSE (both units), then the published references, then the test baselines."""
    rows: list[ReferenceRow] = []
    notes: list[str] = []
    for model in exp.models:
        entry = exp.test_metrics.get(model)
        if not entry:
            notes.append(f"{model}: not tested (no completed trial or no test_metrics.json entry).")
            continue
        test = _test_metrics(entry)
        if not is_finite(test["mse_frame"]):
            notes.append(f"{model}: its test MSE is not a finite number.")
            continue
        best = exp.best_configs.get(model)
        epochs = "?"
        if best is not None:
            planned = (best.config.get("train") or {}).get("epochs")
            epochs = f"best at epoch {best.best_epoch}" + (f" of {planned}" if planned is not None else "")
        rows.append(ReferenceRow(f"{model} (this sweep)", f"this sweep, trial {entry.trial_id}",
                                 epochs, test["mse_pixel255"], test["mse_frame"], True, "ours"))
    spec = clip_spec(exp)
    if spec != MOVING_MNIST:  # the published numbers are of Moving MNIST's 10+10 frames of 1x64x64
        notes.append(f"Published Moving MNIST numbers are left out: this sweep's clips are {spec.describe()}.")
    for r in REFERENCES if spec == MOVING_MNIST else ():
        rows.append(ReferenceRow(r.label, f"{r.source} (reported as {r.unit})", str(r.epochs),
                                 r.mse_pixel255, r.mse_frame, False, "published"))
    base = get_baseline_info(exp)
    for b in base.rows:
        if is_finite(b.test["mse_frame"]):
            rows.append(ReferenceRow(f"baseline: {b.name}", f"no training: {b.description} (this sweep's test split)",
                                     "0", b.test["mse_pixel255"], b.test["mse_frame"], False, "baseline"))
    return ReferenceInfo(rows=rows, notes=notes + base.notes)


def draw_reference(info: ReferenceInfo) -> go.Figure:
    """Bars of test MSE/pixel (0–255); the hover shows MSE/frame, source and epochs too."""
    fig = go.Figure()
    for kind, name, color in (("ours", "this sweep (test)", "#1f77b4"), ("published", "published", "#aaaaaa"),
                              ("baseline", "trivial baseline (test, no training)", "#d62728")):
        rows = [r for r in info.rows if r.kind == kind]
        if not rows:
            continue
        fig.add_bar(
            x=[r.label for r in rows], y=[r.mse_pixel255 for r in rows], name=name, marker_color=color,
            customdata=[[r.mse_frame, r.source, r.epochs] for r in rows],
            text=[f"{r.mse_pixel255:.0f}" for r in rows], textposition="outside",
            hovertemplate="%{x}<br>MSE/pixel (0–255) %{y:.1f}<br>MSE/frame %{customdata[0]:.2f}"
                          "<br>%{customdata[1]}<br>epochs: %{customdata[2]}<extra></extra>",
        )
    fig.update_layout(title="Test MSE: this sweep beside published Moving MNIST numbers and trivial baselines",
                      yaxis_title=MSE_PIXEL_LABEL, height=420, margin=dict(t=60, b=80))
    return fig
