"""What a sweep found: each model's best trial (over all epochs of all trials), its checkpoint
tested on the held-out test split with a few predicted clips, and the trivial baselines beside them.

`evaluate` computes the `Findings`; `write_findings` writes them into the experiment directory
(whose files and records belong to `mmtune.experiment`).
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmtune._num import as_finite
from mmtune.errors import MMTuneError
from mmtune.experiment import (
    INFEASIBLE_KEY,
    MODEL_KEY,
    Baselines,
    BestConfig,
    CheckpointRef,
    Prediction,
    TestResult,
    TrialRecord,
    dedupe_rows,
    write_baselines,
    write_best_configs,
    write_prediction,
    write_test_metrics,
)
from mmtune.metrics.units import units
from mmtune.search.spaces import SearchSpace

PREDICTION_CLIPS = 4  # test clips whose predictions the report shows, per model


@dataclass(frozen=True)
class Findings:
    """What evaluating a sweep's trials found, per model."""

    best_configs: dict[str, BestConfig]
    test_metrics: dict[str, TestResult]
    predictions: dict[str, Prediction]  # of the checkpoint test_metrics names
    baselines: Baselines



def _model_of(trial: TrialRecord, space: SearchSpace) -> str:
    return str(trial.config.get(MODEL_KEY, space.models[0]) if len(space.models) > 1 else space.models[0])


def best_per_model(trials: list[TrialRecord], space: SearchSpace) -> dict[str, tuple[TrialRecord, dict[str, Any]]]:
    """Per model: (trial, row) of the lowest val MSE over all epochs of all rows that trained (not
    diverged, not infeasible)."""
    best: dict[str, tuple[TrialRecord, dict[str, Any]]] = {}
    for t in trials:
        for r in dedupe_rows(t.rows):
            if r.get("diverged") or r.get(INFEASIBLE_KEY):
                continue
            v = as_finite(r.get("val_mse"))
            if math.isnan(v):
                continue
            model = _model_of(t, space)
            if model not in best or v < as_finite(best[model][1]["val_mse"]):
                best[model] = (t, r)
    return best


def checkpoint_for(trial: TrialRecord, epoch: int) -> CheckpointRef | None:
    """The kept checkpoint reported at `epoch` (Ray keeps the best by val_mse and the latest)."""
    for ref in trial.checkpoints:
        if int(ref.metrics.get("epoch", -1)) == epoch:
            return ref
    ok = [c for c in trial.checkpoints if not c.metrics.get("diverged")]
    return min(ok, key=lambda c: as_finite(c.metrics.get("val_mse"))) if ok else None


def evaluate(space: SearchSpace, train_overrides: dict[str, Any], trials: list[TrialRecord]) -> Findings:
    """Test each model's best checkpoint on the held-out test split; the trivial baselines beside them."""
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    baselines = _baselines(space)
    best_configs: dict[str, BestConfig] = {}
    tests: dict[str, TestResult] = {}
    predictions: dict[str, Prediction] = {}
    for model, (trial, row) in sorted(best_per_model(trials, space).items()):
        cfg = space.trial_config(trial.config, {**train_overrides, "device": "auto"})
        ref = checkpoint_for(trial, int(row.get("epoch") or 0))
        best_configs[model] = _best_config(trial, row, cfg.to_dict(), ref)
        tests[model], pred = _test(trial, cfg, ref, best_configs[model], baselines)
        if pred is not None:
            predictions[model] = pred
    return Findings(best_configs, tests, predictions, Baselines.from_dict(baselines))


def _best_config(trial: TrialRecord, row: dict[str, Any], config: dict[str, Any],
                 ref: CheckpointRef | None) -> BestConfig:
    return BestConfig(
        trial_id=trial.trial_id, params={k: v for k, v in trial.config.items() if k != "optuna_trial"},
        config=config, best_epoch=int(row.get("epoch") or 0), val_mse=as_finite(row.get("val_mse")),
        val_mse_pixel255=as_finite(row.get("val_mse_pixel255")), val_ssim=as_finite(row.get("val_ssim")),
        optuna_trial=trial.config.get("optuna_trial"), checkpoint=ref.path if ref is not None else None,
        checkpoint_epoch=int(ref.metrics.get("epoch", -1)) if ref is not None else None,
    )


def _test(trial: TrialRecord, cfg: Any, ref: CheckpointRef | None, best: BestConfig,
          baselines: dict[str, Any]) -> tuple[TestResult, Prediction | None]:
    """The checkpoint `ref` on the test split, its predictions of a few test clips and its verdict
    (`mmtune.training.evaluate`, the step `mmtune train` takes too)."""
    from mmtune.search import tune_adapter
    from mmtune.training.evaluate import evaluate_best
    from mmtune.training.loop import Trainer

    if ref is None:
        return TestResult(trial.trial_id, error="no checkpoint was kept"), None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            state = tune_adapter.fetch_checkpoint(ref, tmp)
            found = evaluate_best(Trainer(cfg, progress=False), state, baselines,
                                  clips=min(PREDICTION_CLIPS, cfg.data.test_size))
    except MMTuneError as exc:  # e.g. a corrupt checkpoint (sha256 mismatch): report it, go on
        return TestResult(trial.trial_id, error=str(exc)), None
    return TestResult(trial.trial_id, test=found.test, epoch=best.checkpoint_epoch, checkpoint=ref.path,
                      val_mse=best.val_mse, test_size=cfg.data.test_size, units=units(cfg.spec),
                      vs_best_baseline=found.verdict._asdict()), found.prediction


def _baselines(space: SearchSpace) -> dict[str, Any]:
    """The trivial baselines of the sweep's val and test splits (the data is the same for every trial)."""
    from mmtune.data.datasets import make_data_config, open_data
    from mmtune.training.evaluate import baselines_of

    return baselines_of(open_data(make_data_config(space.data)))


# -- write -------------------------------------------------------------------------------------


def write_findings(exp_dir: Path, found: Findings) -> None:
    """predictions/<model>.npz, baselines.json, best_configs.json and test_metrics.json."""
    for model, pred in found.predictions.items():
        tested = found.test_metrics[model]
        write_prediction(exp_dir, model, pred, tested.trial_id, int(tested.epoch if tested.epoch is not None else -1))
    write_baselines(exp_dir, found.baselines)
    write_best_configs(exp_dir, found.best_configs)
    write_test_metrics(exp_dir, found.test_metrics)
