"""A sweep's final phase: search cheaply, then train the winner on the whole machine.

A search can only beat one good run at equal compute if the model it delivers carries most of
that compute. So a sweep with `final_share` searches on part of its time budget, then continues
the best trial found (its best checkpoint's weights) on every CPU of the driver's machine for
what is left of the budget, on a schedule planned for that time (`TrainConfig.time_budget_s`).
`--no-search` is the same phase alone: the space's default config from scratch, for the whole
budget, which is the run that a sweep has to beat.

The phase is one more trial of the experiment (`FINAL_TRIAL_ID`): its rows go to results.parquet
with their cost columns and `phase` "final", its scalars to TensorBoard, its best checkpoint under
`trial_final/`, and the test split is run on it like on any trial. It runs in the driver (no Ray).
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmtune.experiment import STATE_FILE, CheckpointRef, TrialRecord
from mmtune.search.spaces import SearchSpace

FINAL_TRIAL_ID = "final"
FINAL_DIR = "trial_final"
# Clips between two validations of the final phase (with online data): each validation of 256 clips
# costs about what training 100 clips does, so the phase validates rarely; its last epoch ends part-way.
FINAL_CHUNK = 2000
MAX_EPOCHS = 10_000  # an upper bound: the time budget ends the phase
MIN_FINAL_S = 10.0  # a final phase shorter than this is not run
TEST_MARGIN = 1.2
REPORT_S = 15.0  # the baselines, the predicted clips and the report, after the test split  # the final model's test time: its measured inference time per clip, with this margin


@dataclass(frozen=True)
class FinalStart:
    """What the final phase trains: a config by Optuna name, and the weights it starts from."""

    params: dict[str, Any]  # flat Optuna names, the model included when the space has several
    source: str | None = None  # the trial whose weights it continues; None: from scratch
    checkpoint: CheckpointRef | None = None
    epoch: int = 0  # the epoch of that checkpoint (the final phase's epochs count on from it)

    def note(self) -> str:
        """How the console and the report name where the final model came from."""
        if self.source is None:
            return "the space's default config, trained from scratch (no search)"
        return f"trial {self.source}'s epoch-{self.epoch} checkpoint, continued"


def run_final(space: SearchSpace, train_overrides: dict[str, Any], start: FinalStart, deadline: float,
              reserve_s: float, exp_dir: Path, threads: int, infer_ms: float | None = None) -> TrialRecord | None:
    """Train `start` on `threads` CPU threads until `deadline` (the clock's seconds), less `reserve_s`
    and its own test time, validation included.

    Its test time (and a validation's, before one has been timed) comes from its model's inference
    time per clip: `infer_ms`, from the search's trials of the same family (one thread each) at the
    speed-up of `threads`, or, without it, measured here.

    Returns:
        The final phase as a trial of the experiment (its rows, one per validation, and its best
        checkpoint); None when less than `MIN_FINAL_S` is left for it.
    """
    from mmtune.search.trial_log import TB_DIR, TrialLog

    planned = _final_trainer(space, train_overrides, start, deadline, reserve_s, threads, infer_ms)
    if planned is None:
        return None
    trainer, budget_s = planned
    cfg = trainer.trial
    out = exp_dir / FINAL_DIR
    node = {"node_ip": "127.0.0.1", "hostname": socket.gethostname(), "node_id": "driver"}
    log = TrialLog(cfg, str(out / TB_DIR), node, start.epoch, start.note(), image_every=1)
    rows: list[dict[str, Any]] = []
    best: CheckpointRef | None = None
    t0, params = time.time(), {f"config/{k}": v for k, v in start.params.items()}
    _say(f"mmtune search: final phase: {cfg.model}, {start.note()}, for {budget_s:.0f}s on {threads} thread(s)")

    def on_epoch(result: Any, tr: Any) -> None:
        nonlocal best
        row = {**log.epoch(result, tr), **params, "trial_id": FINAL_TRIAL_ID, "phase": "final",
               "timestamp": int(time.time()), "time_total_s": time.time() - t0, "time_budget_s": budget_s,
               "time_this_iter_s": result.seconds, "training_iteration": len(rows) + 1}
        rows.append(row)
        if result.status == "ok" and tr.best_epoch == result.epoch:
            path = out / f"checkpoint_{result.epoch:06d}"
            tr.save(path / STATE_FILE, optimizer=False)
            if best is not None and Path(best.path) != path:
                shutil.rmtree(best.path)
            best = CheckpointRef(str(path), {"epoch": result.epoch, "val_mse": row["val_mse"]}, None)
        _say(f"mmtune search: final phase: epoch {result.epoch} ({result.train_samples} clips), val mse_frame "
             f"{result.val_mse:.2f}, {min(tr.budget_used(), 1.0):.0%} of {budget_s:.0f}s")

    fit = trainer.fit(on_epoch)
    log.close()
    last = rows[-1]["epoch"] if rows else start.epoch
    for r in rows:  # the time budget planned the phase: it ran all of it, it was not stopped early
        r["epochs_planned"] = last
    error = fit.message if fit.status == "diverged" else None
    return TrialRecord(FINAL_TRIAL_ID, "TERMINATED", dict(start.params), rows, error, str(out),
                       [best] if best is not None else [])


def _final_trainer(space: SearchSpace, train_overrides: dict[str, Any], start: FinalStart, deadline: float,
                   reserve_s: float, threads: int, infer_ms: float | None) -> tuple[Any, float] | None:
    """The final phase's Trainer, on `start`'s weights, and its training seconds (validations
    included, its test's left out); None when under `MIN_FINAL_S` would be left."""
    import torch

    from mmtune.data.datasets import DataConfig
    from mmtune.search.tune_adapter import fetch_checkpoint
    from mmtune.training.cost import infer_ms_per_clip
    from mmtune.training.loop import Trainer

    torch.set_num_threads(max(1, threads))
    cfg = space.trial_config(start.params, {**train_overrides, "time_budget_s": float(max(deadline - time.time(), 1)),
                                            "epochs": start.epoch + MAX_EPOCHS})
    if isinstance(cfg.data, DataConfig) and cfg.data.online:  # an array file's windows are not drawn online
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, train_size=FINAL_CHUNK))
    trainer = Trainer(cfg, progress=False)
    ms = infer_ms / thread_speedup(threads) if infer_ms is not None else infer_ms_per_clip(trainer, clips=16)
    trainer.val_seconds_guess = TEST_MARGIN * ms * cfg.data.val_size / 1000.0
    test_s = TEST_MARGIN * ms * cfg.data.test_size / 1000.0
    budget_s = deadline - time.time() - reserve_s - test_s
    if budget_s < MIN_FINAL_S:
        _say(f"mmtune search: final phase skipped: {budget_s:.0f}s would be left for it (under {MIN_FINAL_S:.0f}s)")
        return None
    trainer.trial = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, time_budget_s=float(budget_s)))
    if start.checkpoint is not None:
        with tempfile.TemporaryDirectory() as tmp:
            trainer.load_weights(fetch_checkpoint(start.checkpoint, tmp))
        trainer.epoch = start.epoch  # online clips of later epochs: ones the trial never saw
    return trainer, budget_s


def family_infer_ms(trials: list[TrialRecord]) -> dict[str, float]:
    """Each model's slowest inference time per clip (`infer_ms_per_clip`, one thread) in the search's trials."""
    per_model: dict[str, float] = {}
    for t in trials:
        for r in t.rows:
            ms, model = r.get("infer_ms_per_clip"), str(r.get("model"))
            if ms is not None and not math.isnan(float(ms)):
                per_model[model] = max(per_model.get(model, 0.0), float(ms))
    return per_model


def thread_speedup(threads: int) -> float:
    """Inference speed-up of `threads` threads over one: 1.6 for 2, as measured on the 2-core CPU (and
    assumed, conservatively, for more)."""
    return 1.6 if threads >= 2 else 1.0


def reserve_for_test_s(trials: list[TrialRecord], test_clips: int, threads: int, skip_model: str | None = None) -> float:
    """Seconds to keep back for the test split of each family's best trial (but `skip_model`'s, which
    the final phase counts itself) and for the report: each model's inference time per clip
    (`family_infer_ms`) at the speed-up of `threads`, with a margin, plus a fixed 15 s for the
    baselines, the predictions and the report.
    """
    per_model = {m: ms for m, ms in family_infer_ms(trials).items() if m != skip_model}
    return REPORT_S + TEST_MARGIN * sum(ms * test_clips / 1000.0 for ms in per_model.values()) / thread_speedup(threads)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cpu_threads() -> int:
    """Every CPU this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
