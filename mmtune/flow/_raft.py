"""RAFT weights (torchvision's cache or MMTUNE_RAFT_WEIGHTS), model loading and input prep.

Pretrained weights are looked up, in order, at $MMTUNE_RAFT_WEIGHTS (a file, or a folder
holding torchvision's file name; `mmtune train --raft-weights PATH` sets it) and in
torchvision's cache, `torch.hub.get_dir()/checkpoints/<file name of Raft_*_Weights.DEFAULT>`.
Nothing is downloaded here: a missing file is one MMTuneError naming the file and the place.
Random weights exist only behind `random_weights_for_tests()`.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from mmtune.errors import MMTuneError
from mmtune.flow._cache import file_sha256

WEIGHTS_ENV = "MMTUNE_RAFT_WEIGHTS"
MIN_SIZE = 128  # RAFT's feature pyramid needs frames of at least 128 px
_RANDOM_FOR_TESTS = False


@contextlib.contextmanager
def random_weights_for_tests() -> Iterator[None]:
    """Tests only: RAFT runs with seeded random weights instead of a pretrained file."""
    global _RANDOM_FOR_TESTS
    before, _RANDOM_FOR_TESTS = _RANDOM_FOR_TESTS, True
    try:
        yield
    finally:
        _RANDOM_FOR_TESTS = before


def _weights_enum(variant: str):
    from torchvision.models.optical_flow import Raft_Large_Weights, Raft_Small_Weights

    return {"small": Raft_Small_Weights, "large": Raft_Large_Weights}[variant].DEFAULT


def weights_file_name(variant: str) -> str:
    """torchvision's file name of the default weights, e.g. raft_small_C_T_V2-01064c6d.pth."""
    return Path(urlparse(_weights_enum(variant).url).path).name


def default_weights_path(variant: str) -> Path:
    """Where torchvision's cache keeps the default weights of `variant`."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / weights_file_name(variant)


def resolve_weights(variant: str) -> Path | None:
    """The weights file of raft_`variant`, None under the test hook; MMTuneError when missing."""
    if _RANDOM_FOR_TESTS:
        return None
    name, url = weights_file_name(variant), _weights_enum(variant).url
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        path = Path(env).expanduser()
        if path.is_dir():
            path = path / name
        if not path.is_file():
            raise MMTuneError(
                f"raft_{variant} weights file {path} does not exist (from --raft-weights / ${WEIGHTS_ENV}); "
                f"put {name} there (download {url})"
            )
        return path
    path = default_weights_path(variant)
    if not path.is_file():
        raise MMTuneError(
            f"raft_{variant} needs its pretrained weights and {path} is missing; download {url} to that path "
            f"or pass --raft-weights PATH (or set ${WEIGHTS_ENV}), or use --flow farneback"
        )
    return path


@functools.lru_cache(maxsize=8)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of a weights file, cached while its size and mtime stay the same."""
    return file_sha256(Path(path))


def weights_digest(variant: str) -> str:
    """sha256 of the weights file in use ("random-for-tests" under the test hook)."""
    path = resolve_weights(variant)
    if path is None:
        return "random-for-tests"
    st = path.stat()
    return _file_sha256(str(path.resolve()), st.st_size, st.st_mtime_ns)


def pick_device(name: str):
    """"auto": CUDA when there is one, else CPU."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise MMTuneError("RAFT device cuda was asked for but no CUDA GPU is visible; use device auto or cpu")
    return torch.device(name)


def load_model(variant: str, device):
    """RAFT in eval mode on `device`, with the resolved weights (cached per process)."""
    path = resolve_weights(variant)
    key = "random-for-tests" if path is None else weights_digest(variant)
    return _load_model(variant, None if path is None else str(path), key, str(device))


@functools.lru_cache(maxsize=4)
def _load_model(variant: str, path: str | None, key: str, device: str):
    import torch
    from torchvision.models.optical_flow import raft_large, raft_small

    build = {"small": raft_small, "large": raft_large}[variant]
    if path is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = build(weights=None)
    else:
        model = build(weights=None)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except Exception as exc:  # unreadable file or another model's weights
            raise MMTuneError(
                f"{path} is not raft_{variant} weights ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                f"expected {weights_file_name(variant)}"
            ) from None
    return model.eval().to(device)


def prepare(frames: np.ndarray, factor: int, device):
    """uint8 frames (B, H, W) -> RAFT input (B, 3, H·factor, W·factor) in [-1, 1] on `device`."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(frames)).to(device).float()
    x = x.div_(127.5).sub_(1.0).unsqueeze(1)  # (B, 1, H, W)
    if factor > 1:
        x = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    return x.expand(-1, 3, -1, -1).contiguous()  # grey -> the 3 channels RAFT was trained on
