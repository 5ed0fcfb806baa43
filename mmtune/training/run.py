"""`mmtune train`: train one config, then write its test metrics and baselines (the sweep's
files, with one family), its run record (JSON) and a frame strip (PNG)."""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

from mmtune._io import write_json
from mmtune.data.moving_mnist import load_standard_file
from mmtune.errors import MMTuneError
from mmtune.experiment import (
    BEST_CHECKPOINT,
    HISTORY_FILE,
    LAST_CHECKPOINT,
    RUN_FILES,
    STRIP_FILE,
    Baselines,
    TestResult,
    TrainRecord,
    write_baselines,
    write_test_metrics,
    write_train_record,
)
from mmtune.flow import check_estimator
from mmtune.metrics.units import units
from mmtune.strips import save_strip
from mmtune.training.checkpoint import check_resume, load_checkpoint, save_checkpoint
from mmtune.training.config import TrialConfig
from mmtune.training.evaluate import baselines_of, evaluate_best
from mmtune.training.loop import Trainer, resolve_device
from mmtune.training.memory import does_not_fit
from mmtune.training.protocols import protocol_record

# Every file train_one writes into its folder: an --out that holds one holds another run's results.
RESULT_FILES = RUN_FILES


class TrainResult(NamedTuple):
    """What `train_one` wrote: train.json's record and test_metrics.json's one entry."""

    record: TrainRecord
    tested: TestResult


def train_one(trial: TrialConfig, out_dir: str | Path, resume: str | None = None, progress: bool = True,
              protocol: str | None = None, protocol_overridden: list[str] | None = None,
              overwrite: bool = False) -> TrainResult:
    """Train `trial`, evaluate the best checkpoint on the test split and write the results.

    Writes into `out_dir`, each file atomically (a crash leaves the old file or the new one):
    last.pt, best.pt, history.json, strip.png; test_metrics.json ({model: TestResult}) and
    baselines.json (the val and test splits' trivial baselines) in the sweep's schema; and
    train.json (`TrainRecord`: status, config, the `protocol` with the fields flags overrode,
    device, wall time). best.pt (read back only for the test split) and a finished run's last.pt
    carry no optimizer state. A `resume` checkpoint is read and checked against `trial` before
    anything is written. An `out_dir` holding another run's results (`RESULT_FILES`) is refused
    before anything is written, unless `resume` is a checkpoint inside it or `overwrite` is given
    (then the earlier run's files are removed first, so the folder never mixes two runs).
    """
    state = _checked_before_writing(trial, resume)
    out = Path(out_dir)
    earlier = _earlier_results(out, resume, overwrite)
    t0 = time.perf_counter()
    trainer = Trainer(trial, progress=progress)
    if state is not None and resume:
        trainer.load_state_dict(state, f"--resume {resume}")
    if earlier:
        print(f"mmtune train: --overwrite: removing the earlier run's {_names(earlier)} from {out}", file=sys.stderr)
        for path in earlier:
            path.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    if state is not None and resume:
        _carry_best(trainer, Path(resume), out)
    print(f"training {trial.model} on {trainer.device} for {trial.train.epochs} epochs "
          f"({trainer.train_size} train sequences of {trainer.spec.describe()}) -> {out}", file=sys.stderr)

    def on_epoch(result, tr: Trainer) -> None:
        tr.save(out / LAST_CHECKPOINT, optimizer=not tr.finished)  # resuming a finished run trains nothing
        if result.status == "ok" and tr.best_epoch == result.epoch:
            tr.save(out / BEST_CHECKPOINT, optimizer=False)

    fit = trainer.fit(on_epoch)
    write_json(_history(fit, trainer), out / HISTORY_FILE)
    baselines = baselines_of(trainer.data)
    if fit.best_epoch is not None:
        tested = _test_best(trainer, out, baselines, fit.best_val_mse)
    else:
        tested = TestResult(out.name, error=f"not tested: {fit.status}: {fit.message}")
    record = TrainRecord(
        model=trial.model, status=fit.status, message=fit.message, best_epoch=fit.best_epoch,
        config=trial.to_dict(), protocol=protocol_record(protocol, trial.data, protocol_overridden or []),
        device=str(trainer.device), wall_seconds=time.perf_counter() - t0, units=units(trainer.spec),
        clip_spec=dataclasses.asdict(trainer.spec))
    write_baselines(out, Baselines.from_dict(baselines))
    write_test_metrics(out, {trial.model: tested})
    write_train_record(out, record)
    return TrainResult(record, tested)


def _history(fit: Any, trainer: Trainer) -> list[dict[str, Any]]:
    """history.json: one record per epoch."""
    return [{"epoch": r.epoch, "train_loss": r.train_loss, "val": r.val, "seconds": r.seconds, "status": r.status,
             "train_seconds": r.train_seconds, "train_samples": r.train_samples or trainer.train_size}
            for r in fit.history]


def _checked_before_writing(trial: TrialConfig, resume: str | None) -> dict[str, Any] | None:
    """What can be refused in one line before anything is written: the flow, the memory, the test
    file, the --resume checkpoint (its state is returned)."""
    # A missing RAFT weights file (offline) or a flow that does not fit the data is one line before
    # anything is printed or written, not an error after the first split was loaded.
    check_estimator(trial.train.flow, trial.data)
    gpus = 1.0 if resolve_device(trial.train.device).type == "cuda" else 0.0
    if (why := does_not_fit(trial, cpus=float(os.cpu_count() or 1), gpus=gpus)) is not None:
        raise MMTuneError(f"{why}; use a smaller model or batch size")
    if trial.data.test_file:  # a wrong shape or dtype is found now, not after training
        load_standard_file(trial.data.test_file)
    if not resume:
        return None
    state = load_checkpoint(resume)  # a foreign, corrupt or mismatched checkpoint is one line
    check_resume(state, trial, f"--resume {resume}")
    return state


def _test_best(trainer: Trainer, out: Path, baselines: dict[str, Any], val_mse: float) -> TestResult:
    """The best epoch's test metrics and verdict, its strip written to `out`."""
    best = out / BEST_CHECKPOINT  # else (see _carry_best) the weights this run ended with
    found = evaluate_best(trainer, best if best.is_file() else None, baselines, clips=1)
    p = found.prediction
    save_strip(p.inputs[0], p.truth[0], p.pred[0], out / STRIP_FILE)
    return TestResult(out.name, test=found.test, epoch=found.epoch,
                      checkpoint=BEST_CHECKPOINT if best.is_file() else None, val_mse=val_mse,
                      test_size=int(baselines["splits"]["test"]["size"]), units=units(trainer.spec),
                      vs_best_baseline=found.verdict._asdict())


def _earlier_results(out: Path, resume: str | None, overwrite: bool) -> list[Path]:
    """The files of another run in `out` that `--overwrite` replaces; an MMTuneError (one line) without it.

    A `resume` checkpoint inside `out` continues that run: its files are this run's, not another's.
    """
    if out.exists() and not out.is_dir():
        raise MMTuneError(f"--out {out} is a file, not a folder; give another --out")
    found = [out / name for name in RESULT_FILES if (out / name).exists()]
    if not found or (resume and Path(resume).resolve().parent == out.resolve()):
        return []
    if overwrite:
        return found
    resume_it = f"continue that run with --resume {out / LAST_CHECKPOINT}, " if (out / LAST_CHECKPOINT).is_file() else ""
    raise MMTuneError(f"--out {out} holds the results of another run ({_names(found)}); give another --out, "
                      f"{resume_it}or replace them with --overwrite")


def _names(paths: list[Path]) -> str:
    """The file names, a checksum sidecar left out when its checkpoint is named."""
    return ", ".join(p.name for p in paths if not (p.suffix == ".sha256" and p.with_suffix("") in paths))


def _carry_best(trainer: Trainer, resume: Path, out: Path) -> None:
    """A run resumed into another folder takes its best epoch's weights along, for the test split."""
    best = out / BEST_CHECKPOINT
    if trainer.best_epoch is None or best.exists():
        return
    if trainer.best_epoch == trainer.epoch:  # the resumed state is the best one
        trainer.save(best, optimizer=False)
        return
    source = resume.with_name(BEST_CHECKPOINT)
    if source.is_file():
        state = load_checkpoint(source)
        check_resume(state, trainer.trial, f"{source}", weights_only=True)
        if state["epoch"] == trainer.best_epoch:
            save_checkpoint({k: v for k, v in state.items() if k not in ("optimizer", "scheduler")}, best)
            return
    print(f"mmtune train: warning: the best epoch's weights (epoch {trainer.best_epoch}) are not beside {resume}; "
          f"the test split runs on the best epoch this run reaches, else on its last", file=sys.stderr)
