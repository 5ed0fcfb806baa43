"""Checkpoints: model, optimizer, scheduler, epoch, RNG state and the config, written atomically.

A checkpoint holds plain data only: tensors, dicts, lists, tuples, numbers, strings and None,
with the trial config as its JSON-able dict (`TrialConfig.to_dict()`) and the RNG states as
tensors. It is read with `torch.load(weights_only=True)`, whose unpickler builds those types and
nothing else, so a file that names any other object (a crafted `__reduce__`, a pickled class) is
refused with one line before any of it runs. Each `NAME.pt` has a `NAME.pt.sha256` beside it; a
checkpoint whose bytes do not match is reported as corrupt instead of being loaded.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from mmtune._io import atomic_write_bytes
from mmtune.errors import MMTuneError
from mmtune.training.config import TrialConfig

# Train fields that change nothing a resumed run computes: where it runs, how fast, how the
# validation is batched. Every other train field shapes the schedule, the batches or the loss.
RESUME_FREE_TRAIN_FIELDS = ("device", "fast", "eval_batch_size")
# Where torchvision's MNIST lives on this machine is no part of the data protocol.
RESUME_FREE_DATA_FIELDS = ("digits_root",)
_PLAIN_SCALARS = (bool, int, float, str, type(None))


class CheckpointError(MMTuneError):
    """A checkpoint file that cannot be used: missing, corrupt, truncated, or not plain data."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write `state` (plain data only) to `path` atomically (temp file + rename) with a sha256 sidecar."""
    _check_plain(state, "state")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    atomic_write_bytes(data, path)
    atomic_write_bytes((hashlib.sha256(data).hexdigest() + "\n").encode(), _sidecar(path))
    return path


def _check_plain(obj: Any, where: str) -> None:
    """Raise TypeError unless `obj` is what `torch.load(weights_only=True)` reads back (a bug otherwise)."""
    if isinstance(obj, torch.Tensor) or isinstance(obj, _PLAIN_SCALARS):
        return
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"checkpoint key {where}[{key!r}] is a {type(key).__name__}, not str or int")
            _check_plain(value, f"{where}[{key!r}]")
        return
    if isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            _check_plain(value, f"{where}[{i}]")
        return
    raise TypeError(f"checkpoint value {where} is a {type(obj).__module__}.{type(obj).__qualname__}, not plain data")


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def checksum_problem(path: Path, data: bytes, require_sidecar: bool = False) -> str | None:
    """Why `data` (the bytes of checkpoint `path`) fails its sha256 sidecar, or None when it passes."""
    side = _sidecar(path)
    if not side.is_file():
        return "no sha256 sidecar" if require_sidecar else None
    return None if side.read_text().strip() == hashlib.sha256(data).hexdigest() else "sha256 mismatch"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint as plain data after checking its sha256.

    Raises:
        CheckpointError: (one line) when the file is missing, corrupt, truncated, not a dict, or
            names any object that is not plain data; nothing of such a file is executed.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    data = path.read_bytes()
    if checksum_problem(path, data):
        raise CheckpointError(f"checkpoint {path} is corrupt (sha256 mismatch); delete it to retrain")
    try:
        state = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = _refused_object(str(exc))
        if refused is None:  # the restricted unpickler also fails on a cut-off pickle stream
            raise CheckpointError(f"checkpoint {path} cannot be read (truncated or not a checkpoint); "
                                  f"delete it to retrain") from None
        raise CheckpointError(f"checkpoint {path} holds objects that are not plain data ({refused}); "
                              f"mmtune refuses to unpickle it") from None
    except Exception as exc:  # truncated or foreign file
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(exc).__name__}); delete it to retrain") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not an mmtune checkpoint")
    return state


def _refused_object(message: str) -> str | None:
    """The object torch's weights-only unpickler refused, from its error message, or None."""
    m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", message)
    if m:
        return m.group(1)
    m = re.search(r"WeightsUnpickler error: (Unsupported [^.\n]*|Trying to [^.\n]*)", message)
    return m.group(1).strip() if m else None


def check_resume(state: dict[str, Any], trial: TrialConfig, what: str, weights_only: bool = False) -> None:
    """Raise MMTuneError `"{what}: {why}"` (one line) unless checkpoint `state` can continue `trial`.

    Args:
        state: a loaded checkpoint.
        trial: the run it is asked to continue.
        what: how the message names the checkpoint (`"--resume runs/a/last.pt"`).
        weights_only: the weights are only evaluated: the model and its config must match, not the
            data or the training.
    """
    missing = sorted({"trial", "model", "epoch", "best_val_mse", "best_epoch", "rng_cpu"} - set(state))
    if missing:
        raise CheckpointError(f"{what}: the file lacks {', '.join(missing)}; it is not a checkpoint of mmtune's")
    epoch = state["epoch"]
    if not isinstance(epoch, int) or isinstance(epoch, bool):
        raise CheckpointError(f"{what}: its epoch is {epoch!r}, not a whole number; it is not a checkpoint of mmtune's")
    problem = resume_mismatch(state["trial"], trial, weights_only)
    if problem is None and not weights_only and "optimizer" not in state and epoch < trial.train.epochs:
        problem = (f"the checkpoint holds the weights only (epoch {epoch} of {trial.train.epochs}, no optimizer "
                   f"state, as best.pt): it can be evaluated, not continued; resume from the run's last.pt")
    if problem:
        raise MMTuneError(f"{what}: {problem}")


def resume_mismatch(saved: Any, trial: TrialConfig, weights_only: bool = False) -> str | None:
    """Why a checkpoint whose `state["trial"]` is `saved` cannot continue `trial`, or None when it can.

    The model, its config and the data protocol must match, and so must every train field that
    shapes the schedule, the batches or the loss (all but `RESUME_FREE_TRAIN_FIELDS`). A changed
    number of epochs is refused: OneCycle and cosine plan their whole schedule from it.
    """
    if not (isinstance(saved, dict) and all(isinstance(saved.get(k), dict) for k in ("model_cfg", "train", "data"))):
        return "the checkpoint holds no trial config (it was not written by mmtune train or mmtune search)"
    want = trial.to_dict()
    others: tuple[str, ...] = () if weights_only else ("train", "data")
    if saved.get("model") != trial.model:
        fields = ["model", *_diff(saved, want, others)]
        return (f"checkpoint was trained with model {saved.get('model')}, this run asks for {trial.model}; "
                f"mismatched (checkpoint vs this run): {', '.join(fields)}")
    diffs = _diff(saved, want, ("model_cfg", *others))
    if not diffs:
        return None
    old_epochs, new_epochs = saved["train"].get("epochs"), trial.train.epochs
    if diffs == [f"train.epochs ({old_epochs} vs {new_epochs})"]:
        return (f"--epochs {new_epochs} differs from the checkpoint's {old_epochs}: the {trial.train.scheduler} "
                f"schedule was planned for {old_epochs} epochs; start a new run, or resume with --epochs {old_epochs}")
    return ("checkpoint was trained with another config than this run asks for; "
            f"mismatched (checkpoint vs this run): {', '.join(diffs)}")


def _diff(saved: dict[str, Any], want: dict[str, Any], sections: tuple[str, ...]) -> list[str]:
    """The differing fields of `sections`, as "section.key (checkpoint's vs this run's)"."""
    free = {"train": RESUME_FREE_TRAIN_FIELDS, "data": RESUME_FREE_DATA_FIELDS}
    out = []
    for section in sections:
        old, new = saved.get(section) or {}, want[section]
        for key in sorted(set(old) | set(new)):
            if key in free.get(section, ()):
                continue
            a, b = old.get(key, "<missing>"), new.get(key, "<missing>")
            if _norm(a) != _norm(b):
                out.append(f"{section}.{key} ({a} vs {b})")
    return out


def _norm(value: Any) -> Any:
    """Tuples and lists compare equal (a config's tuple may come back as either)."""
    return [_norm(v) for v in value] if isinstance(value, (list, tuple)) else value
