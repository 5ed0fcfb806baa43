"""Checkpoints: model, optimizer, scheduler, epoch, RNG state and the config, written atomically.

Each `NAME.pt` has a `NAME.pt.sha256` beside it; a checkpoint whose bytes do not match is
reported as corrupt instead of being loaded.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import torch

from mmtune.errors import MMTuneError


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write `state` to `path` atomically (temp file + rename) with a sha256 sidecar."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    side = path.with_name(path.name + ".sha256")
    tmp_side = side.with_name(f".{side.name}.{os.getpid()}.tmp")
    tmp_side.write_text(digest + "\n")
    os.replace(tmp_side, side)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint after checking its sha256; MMTuneError when missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise MMTuneError(f"checkpoint {path} does not exist")
    data = path.read_bytes()
    side = path.with_name(path.name + ".sha256")
    if side.is_file() and side.read_text().strip() != hashlib.sha256(data).hexdigest():
        raise MMTuneError(f"checkpoint {path} is corrupt (sha256 mismatch); delete it to retrain")
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=False)
    except Exception as exc:  # truncated or foreign file
        raise MMTuneError(f"checkpoint {path} cannot be read ({type(exc).__name__}); delete it to retrain") from None
