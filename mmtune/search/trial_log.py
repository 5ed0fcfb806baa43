"""What a trial reports each epoch: the metric row Ray records (results.parquet's columns), TensorBoard
and, on a shared MLflow store, the trial's own MLflow run (`tracking.TrialRun`).

The Ray trainable (`tune_adapter.train_fn`) hands each finished epoch to `TrialLog.epoch` and
reports the row it returns; this module does not import Ray (where the trial runs is passed in).
Every row also carries what the config costs (`COST_COLUMNS`), so the report can set accuracy
against cost and a multi-objective search can minimise `FLOPS` beside `METRIC`.
"""

from __future__ import annotations

import math
import time
from typing import Any

from mmtune._num import as_finite
from mmtune.experiment import FLOPS
from mmtune.training.cost import Cost, infer_ms_per_clip, static_cost

METRIC = "val_mse"  # what Optuna and ASHA minimise
# What a diverged trial reports as its objective: finite (ASHA's rung percentiles turn inf into
# NaN cutoffs, Optuna rejects NaN) and far above any real per-frame MSE (at most 64*64 = 4096).
DIVERGED_VAL_MSE = 1.0e9
# The cost keys of every row (experiment.COST_COLUMNS): params and FLOPs (`FLOPS`, the same on any
# machine) are counted once per trial; the speeds are measured where the trial runs (NaN in a
# diverged epoch's row).
TB_DIR = "tensorboard"  # inside each trial's folder
# Row key -> the TensorBoard tag of its scalar.
TB_SCALARS = {"train_loss": "train/loss", "val_mse_raw": "val/mse", "val_mse_pixel255": "val/mse_pixel255",
              "val_mae": "val/mae", "val_ssim": "val/ssim", "val_psnr": "val/psnr",
              "train_samples_per_s": "speed/train_samples_per_s", "infer_ms_per_clip": "speed/infer_ms_per_clip"}
TB_IMAGE = "val/prediction"


class TrialLog:
    """The per-epoch metric rows of one trial, and its TensorBoard event file.

    Args:
        trial: the trial's TrialConfig.
        log_dir: where TensorBoard's events go.
        node: where the trial runs (node_ip, hostname, node_id), as the adapter learned it.
        resumed_from: the epoch the trial resumed from (0: from scratch).
        note: "" unless the checkpoint it was restored from was unusable: what it did instead.
        image_every: a predicted-frames image every this many epochs (and at the first and last).
        mlflow: the trial's own MLflow run on a shared store (`tracking.TrialRun`): each row goes there too.
    """

    def __init__(self, trial: Any, log_dir: str, node: dict[str, Any], resumed_from: int = 0, note: str = "",
                 image_every: int = 2, mlflow: Any = None) -> None:
        from tensorboardX import SummaryWriter

        self.trial, self.node, self.resumed_from, self.note = trial, dict(node), resumed_from, note
        self.mlflow, self.diverged = mlflow, False
        self.image_every = image_every
        self.writer = SummaryWriter(log_dir)
        self.t0 = time.perf_counter()
        self.train_total = 0.0
        self.cost: Cost | None = None  # counted at the first epoch (`measure`): that is when the trainer comes

    def measure(self, result: Any, trainer: Any) -> Cost:
        """The trial's cost: params and FLOPs once, the inference time at its first healthy epoch in this process.

        A diverged epoch's NaN weights would be timed like real ones, but the trial ends there, so
        the inference time waits for a healthy epoch (a resumed trial measures it again: the new
        process may run on other hardware).
        """
        if self.cost is None:
            self.cost = static_cost(trainer)
        if math.isnan(self.cost.infer_ms_per_clip) and result.status != "diverged":
            # On a CPU the validation just timed its forward passes (at the evaluation batch): no
            # extra passes. On a GPU they are timed here, best of three, each synced.
            ms = getattr(trainer, "val_ms_per_clip", None)
            self.cost = self.cost._replace(infer_ms_per_clip=ms if ms is not None else infer_ms_per_clip(trainer))
        return self.cost

    def samples(self, result: Any) -> int:
        """Clips the epoch trained on: all of train_size, unless a time budget ended it part-way."""
        return int(getattr(result, "train_samples", 0) or self.trial.data.train_size)

    def cost_columns(self, result: Any) -> dict[str, Any]:
        """`COST_COLUMNS` of one epoch: the trial's counted cost and this epoch's training speed."""
        c = self.cost or Cost(0, math.nan, math.nan, math.nan)
        # A diverged epoch stopped part-way through its samples: its speed would mean nothing.
        sps = (self.samples(result) / result.train_seconds
               if result.status != "diverged" and result.train_seconds > 0 else math.nan)
        return {"params": c.params, FLOPS: c.flops_per_sample, "train_samples_per_s": as_finite(sps),
                "infer_ms_per_clip": c.infer_ms_per_clip}

    def row(self, result: Any) -> dict[str, Any]:
        """The metrics of one `EpochResult`; the first four are the columns of Ray's progress table.

        The cost columns are those `measure` counted (params 0 and NaN before it ran).
        """
        self.train_total += result.train_seconds
        diverged = result.status == "diverged"
        v = result.val
        return {
            METRIC: DIVERGED_VAL_MSE if diverged else as_finite(v.get("mse_frame", math.nan)),
            "epoch": result.epoch,
            "train_loss": as_finite(result.train_loss),
            "val_ssim": as_finite(v.get("ssim", math.nan)),
            "val_mse_raw": as_finite(v.get("mse_frame", math.nan)),
            "val_mse_pixel255": as_finite(v.get("mse_pixel255", math.nan)),
            "val_mae": as_finite(v.get("mae_frame", math.nan)),
            "val_psnr": as_finite(v.get("psnr", math.nan)),
            "epochs_planned": self.trial.train.epochs,
            "train_seconds": result.train_seconds,
            "epoch_seconds": result.seconds,
            "train_seconds_total": self.train_total,
            "fn_seconds": time.perf_counter() - self.t0,
            "resumed_from_epoch": self.resumed_from,
            "resume_note": self.note,
            "diverged": diverged,
            "model": self.trial.model,
            "phase": "search",
            "train_samples": self.samples(result),
            **self.cost_columns(result),
            **self.node,
        }

    def epoch(self, result: Any, trainer: Any) -> dict[str, Any]:
        """The row of a finished epoch with its cost, its scalars (and every `image_every` epochs a prediction) logged."""
        from mmtune.strips import strip_array

        self.measure(result, trainer)
        row = self.row(result)
        for key, tag in TB_SCALARS.items():
            self.writer.add_scalar(tag, row[key], result.epoch)
        if not row["diverged"] and (result.epoch % self.image_every == 0
                                    or result.epoch in (1, self.trial.train.epochs)):
            inputs, truth, pred = trainer.predict("val", n=1)
            self.writer.add_image(TB_IMAGE, strip_array(inputs[0], truth[0], pred[0]), result.epoch, dataformats="HW")
        self.writer.flush()
        if self.mlflow is not None:
            self.mlflow.log(row)
        self.diverged = bool(row["diverged"])
        return row

    def close(self) -> None:
        """The trial has trained to its end (or diverged): its MLflow run is closed. TensorBoard is flushed,
        not closed: tensorboardX closes again at exit and would fail on a closed file."""
        self.writer.flush()
        if self.mlflow is not None:
            self.mlflow.close(self.diverged)
