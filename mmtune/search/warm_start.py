"""`--warm-start EXPERIMENT_DIR`: seed a new sweep with what an earlier one learned.

Ray's own routes do not work with a define-by-run space: OptunaSearch ignores
`points_to_evaluate` there (ray #35319) and refuses `evaluated_rewards` (ray #18587). So the
new sweep's Optuna study is seeded directly, before Ray asks it for anything:

- every earlier finished trial whose parameters fit the new space is added as a COMPLETE trial
  with its best val MSE (user attribute ``warm_start_from``), so the sampler's model of the
  space starts from them;
- the top-k of those (by best val MSE) are enqueued (`study.enqueue_trial`), so the new sweep
  runs them first, under its own budget and seed, and their result is measured again.

Configs that do not fit (a model the new space lacks, a parameter it does not have or a value
outside its range) are named, one line each, and left out; when none fits, the warm start is
refused. This module reads files and talks to Optuna; it does not import Ray.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmtune.errors import MMTuneError
from mmtune.experiment import FLOPS, MODEL_KEY, RESULTS_FILE, best_row

if TYPE_CHECKING:
    from mmtune.search.spaces import SearchSpace

DEFAULT_TOP_K = 3
WARM_ATTR = "warm_start_from"


@dataclass(frozen=True)
class EarlierTrial:
    """One finished trial of the earlier sweep: its Optuna-named parameters and best val MSE."""

    trial_id: str
    params: dict[str, Any]
    val_mse: float
    flops_per_sample: float = math.nan  # of its config, where the earlier sweep recorded it


@dataclass(frozen=True)
class WarmStart:
    """What goes into the new study: known results, the configs to run first, and what was left out."""

    source: str
    known: tuple[EarlierTrial, ...]  # added to the study as COMPLETE, best first
    enqueued: tuple[EarlierTrial, ...]  # the top-k, run first
    incompatible: tuple[tuple[str, str], ...]  # (trial id, why it does not fit the new space)

    def record(self) -> dict[str, Any]:
        """sweep.json's account of the warm start."""
        return {"source": self.source, "known": len(self.known),
                "enqueued": [{"trial_id": t.trial_id, "params": t.params, "val_mse": t.val_mse} for t in self.enqueued],
                "incompatible": [{"trial_id": i, "why": w} for i, w in self.incompatible]}


def earlier_trials(exp_dir: Path) -> list[EarlierTrial]:
    """The earlier sweep's trials with a finite best val MSE, best first (from results.parquet)."""
    import pandas as pd

    path = Path(exp_dir) / RESULTS_FILE
    if not path.is_file():
        raise MMTuneError(f"--warm-start {exp_dir}: no {RESULTS_FILE} there (expected the experiment "
                          f"directory of an earlier sweep, --storage/NAME)")
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # pyarrow's own error types for a truncated file
        raise MMTuneError(f"--warm-start {exp_dir}: {RESULTS_FILE} could not be read ({type(exc).__name__})") from None
    out = []
    for tid, g in df.groupby("trial_id", sort=True):
        best = best_row(g)
        if best is None:
            continue
        params = {c.removeprefix("config/"): _plain(best[c]) for c in g.columns
                  if c.startswith("config/") and not _missing(best[c])}
        flops = pd.to_numeric(pd.Series([best.get(FLOPS)]), errors="coerce").iloc[0]
        out.append(EarlierTrial(str(tid), params, float(best["val_mse"]), float(flops)))
    return sorted(out, key=lambda t: (t.val_mse, t.trial_id))


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _plain(v: Any) -> Any:
    """numpy scalars from parquet as the Python values Optuna stores."""
    return v.item() if hasattr(v, "item") else v


def misfit(params: dict[str, Any], space: SearchSpace) -> str | None:
    """Why `params` (Optuna names) cannot be a trial of `space`, or None when they fit exactly."""
    model = params.get(MODEL_KEY, space.models[0]) if len(space.models) > 1 else space.models[0]
    if MODEL_KEY in params and params[MODEL_KEY] not in space.models:
        return f"model {params[MODEL_KEY]!r} is not in the space {list(space.models)}"
    dists = space.distributions(model)
    given = {k: v for k, v in params.items() if not (k == MODEL_KEY and len(space.models) == 1)}
    extra = sorted(set(given) - set(dists))
    if extra:
        return f"the space has no parameter {', '.join(extra)}"
    lacking = sorted(set(dists) - set(given))
    if lacking:
        return f"it has no value for {', '.join(lacking)}"
    for name, value in given.items():
        dist = dists[name]
        try:
            ok = dist._contains(dist.to_internal_repr(value))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            return f"{name}={value!r} is outside the space's {type(dist).__name__.removesuffix('Distribution')} {_bounds(dist)}"
    return None


def _bounds(dist: Any) -> str:
    return str(list(dist.choices)) if hasattr(dist, "choices") else f"[{dist.low}, {dist.high}]"


def plan_warm_start(exp_dir: str | Path, space: SearchSpace, top_k: int = DEFAULT_TOP_K) -> WarmStart:
    """Read the earlier sweep and sort its configs into fitting and not.

    Raises:
        MMTuneError: the directory holds no usable results, or none of its configs fits `space`.
    """
    if top_k < 1:
        raise MMTuneError(f"--warm-start-top-k must be >= 1, got {top_k}")
    trials = earlier_trials(Path(exp_dir))
    if not trials:
        raise MMTuneError(f"--warm-start {exp_dir}: no trial there reached a finite val MSE; nothing to start from")
    fit, bad = [], []
    for t in trials:
        why = misfit(t.params, space)
        if why:
            bad.append((t.trial_id, why))
        else:  # a one-model space samples no `model`
            params = {k: v for k, v in t.params.items() if not (k == MODEL_KEY and len(space.models) == 1)}
            fit.append(EarlierTrial(t.trial_id, params, t.val_mse, t.flops_per_sample))
    if not fit:
        raise MMTuneError(f"--warm-start {exp_dir}: none of its {len(trials)} configs fits {space.path} "
                          f"(first: trial {bad[0][0]}: {bad[0][1]}); warm-start from a sweep of the same space")
    return WarmStart(str(exp_dir), tuple(fit), tuple(fit[:top_k]), tuple(bad))


def seed_study(study: Any, space: SearchSpace, warm: WarmStart) -> int:
    """Add the known trials to `study` as COMPLETE, then enqueue the top-k (they run first).

    A multi-objective study (val MSE, FLOPs) learns only from earlier trials that recorded their
    FLOPs. Returns how many trials were added as known.
    """
    import optuna

    multi = len(study.directions) > 1
    added = 0
    for t in warm.known:
        if multi and not math.isfinite(t.flops_per_sample):
            continue
        dists = space.distributions(t.params.get(MODEL_KEY, space.models[0]))
        study.add_trial(optuna.trial.create_trial(
            params=t.params, distributions={k: dists[k] for k in t.params},
            **({"values": [t.val_mse, t.flops_per_sample]} if multi else {"value": t.val_mse}),
            user_attrs={WARM_ATTR: warm.source, "ray_trial_id": t.trial_id},
        ))
        added += 1
    for t in warm.enqueued:
        study.enqueue_trial(t.params, user_attrs={WARM_ATTR: warm.source, "rerun_of": t.trial_id},
                            skip_if_exists=False)
    return added
