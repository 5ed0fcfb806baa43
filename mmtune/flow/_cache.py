"""On-disk flow cache: one float16 .npy per key, a JSON sidecar with its sha256, a lock per key.

Layout in the cache folder ($MMTUNE_CACHE, else ~/.cache/mmtune/flow):
    <key>.npy   the array (memory-mapped on load)
    <key>.json  {"meta": what produced it, "shape", "dtype", "sha256": of the .npy bytes}
    <key>.lock  a file lock; whoever holds it may check, build or replace the pair
A builder writes a temporary file, fsyncs it, renames it into place and writes the sidecar
last, so a reader never sees a half-written array: no sidecar or a wrong checksum means
"not built", and the array is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

CACHE_ENV = "MMTUNE_CACHE"
log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """$MMTUNE_CACHE, else ~/.cache/mmtune/flow."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mmtune" / "flow"


def cache_key(meta: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of `meta` (first 32 hex digits)."""
    text = json.dumps(meta, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def paths(key: str, root: Path | None = None) -> tuple[Path, Path, Path]:
    """(array, sidecar, lock) paths of `key`."""
    root = root or cache_dir()
    return root / f"{key}.npy", root / f"{key}.json", root / f"{key}.lock"


def file_sha256(path: Path) -> str:
    """sha256 hex digest of a file, read in 16 MB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _load_valid(key: str, meta: dict[str, Any], shape: tuple[int, ...], root: Path) -> np.ndarray | None:
    """The cached array when it is complete and intact, else None (with a log line why)."""
    data, side, _ = paths(key, root)
    if not side.exists() and not data.exists():
        return None
    try:
        info = json.loads(side.read_text())
        problem = None
        if info.get("meta") != meta:
            problem = "its sidecar describes other inputs"
        elif tuple(info.get("shape", ())) != shape or info.get("dtype") != "float16":
            problem = f"shape/dtype {info.get('shape')} {info.get('dtype')} != {list(shape)} float16"
        elif file_sha256(data) != info.get("sha256"):
            problem = "its checksum does not match"
        if problem is None:
            arr = np.load(data, mmap_mode="r", allow_pickle=False)
            if arr.shape == shape and arr.dtype == np.float16:
                return arr
            problem = f"the file holds {arr.dtype} {arr.shape}"
    except (OSError, ValueError) as exc:  # missing half of the pair, bad JSON, bad .npy header
        problem = f"{type(exc).__name__}: {exc}"
    log.warning("flow cache %s is unusable (%s); rebuilding it", data, problem)
    return None


def load_or_build(
    meta: dict[str, Any],
    shape: tuple[int, ...],
    build: Callable[[np.ndarray], None],
    root: Path | None = None,
) -> np.ndarray:
    """The float16 array of `meta`, memory-mapped; built once by `build(out)` when missing.

    Args:
        meta: JSON-able description of everything that produces the array; its hash is the key.
        shape: the array's shape.
        build: fills a writable float16 array of `shape` in place.
        root: cache folder (default `cache_dir()`).
    """
    root = root or cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    key = cache_key(meta)
    data, side, lock = paths(key, root)
    with FileLock(str(lock)):  # released by the OS if the holder dies
        arr = _load_valid(key, meta, shape, root)
        if arr is not None:
            return arr
        for stale in [data, side, *root.glob(f".{key}.*.tmp*")]:  # left by a crashed builder
            stale.unlink(missing_ok=True)
        tmp = root / f".{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp.npy"
        tmp_side = tmp.with_suffix(".json")
        try:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=shape)
            build(out)
            out.flush()
            del out
            _fsync(tmp)
            digest = file_sha256(tmp)
            os.replace(tmp, data)
            info = {"meta": meta, "shape": list(shape), "dtype": "float16", "sha256": digest}
            tmp_side.write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
            _fsync(tmp_side)
            os.replace(tmp_side, side)  # the sidecar last: its presence marks a complete array
            _fsync(root)
        finally:
            tmp.unlink(missing_ok=True)
            tmp_side.unlink(missing_ok=True)
        return np.load(data, mmap_mode="r", allow_pickle=False)
