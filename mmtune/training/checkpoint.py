"""Checkpoints: model, optimizer, scheduler, epoch, RNG state and the config, written atomically.

Each `NAME.pt` has a `NAME.pt.sha256` beside it; a checkpoint whose bytes do not match is
reported as corrupt instead of being loaded.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import torch

from mmtune._io import atomic_write_bytes
from mmtune.errors import MMTuneError


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write `state` to `path` atomically (temp file + rename) with a sha256 sidecar."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    atomic_write_bytes(data, path)
    atomic_write_bytes((hashlib.sha256(data).hexdigest() + "\n").encode(), _sidecar(path))
    return path


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def checksum_problem(path: Path, data: bytes, require_sidecar: bool = False) -> str | None:
    """Why `data` (the bytes of checkpoint `path`) fails its sha256 sidecar, or None when it passes."""
    side = _sidecar(path)
    if not side.is_file():
        return "no sha256 sidecar" if require_sidecar else None
    return None if side.read_text().strip() == hashlib.sha256(data).hexdigest() else "sha256 mismatch"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint after checking its sha256; MMTuneError when missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise MMTuneError(f"checkpoint {path} does not exist")
    data = path.read_bytes()
    if checksum_problem(path, data):
        raise MMTuneError(f"checkpoint {path} is corrupt (sha256 mismatch); delete it to retrain")
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=False)
    except Exception as exc:  # truncated or foreign file
        raise MMTuneError(f"checkpoint {path} cannot be read ({type(exc).__name__}); delete it to retrain") from None
