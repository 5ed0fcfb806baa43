"""The one evaluation step of `mmtune train` and of a sweep: the best checkpoint on the test split,
a few predicted clips, and the verdict against the trivial baselines.

A run evaluates its own best epoch; a sweep, each family's best trial. Both call `evaluate_best`
with the baselines of the same data (`baselines_of`), so a model's verdict reads the same
wherever it was trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmtune.experiment import Prediction
from mmtune.metrics.baselines import split_baselines
from mmtune.metrics.verdict import Verdict, result_line, verdict
from mmtune.training.loop import Trainer


@dataclass(frozen=True)
class Evaluation:
    """What `evaluate_best` found."""

    epoch: int  # of the weights tested
    test: dict[str, Any]  # Trainer.test(): mse_frame, ..., and their *_per_step lists
    prediction: Prediction  # of the first test clips
    verdict: Verdict  # the test mse_frame beside the best test baseline

    def line(self, model: str) -> str:
        """The console line of this evaluation."""
        return result_line(model, self.test, self.verdict)


def baselines_of(data: Any) -> dict[str, Any]:
    """The trivial baselines of the val and test splits (`split_baselines`) of a run's data (a
    `MovingMNIST` or an `ArrayDataset`: a trainer's, or the one a sweep's trials share)."""
    return split_baselines(data)


def evaluate_best(trainer: Trainer, weights: str | Path | None, baselines: dict[str, Any],
                  clips: int) -> Evaluation:
    """Load `weights` (a checkpoint file; None keeps the trainer's own), test them, predict `clips`
    test clips, and set the test MSE beside the best test baseline of `baselines`."""
    if weights is not None:
        trainer.load_weights(weights)
    test = trainer.test()
    prediction = Prediction(*trainer.predict("test", n=clips))
    found = verdict(test["mse_frame"], baselines["splits"]["test"]["metrics"], trainer.spec.pixels)
    return Evaluation(trainer.epoch, test, prediction, found)
