"""Optical-flow input channels for ConvTAU: estimate, normalise, cache, serve.

What the model sees: for each of the 10 input frames, 2 channels appended to the frame
(so ConvTAU takes 3 input channels), from `flow_inputs(data, split, estimator)`:
  - Flow at frame t is the motion from frame t-1 to frame t, on frame t's pixels: channel 0
    horizontal (+right), channel 1 vertical (+down). It is computed from input frames <= t
    only; the 10 target frames are never read. Frame 0 has no predecessor and gets zeros.
  - Normalisation: pixels (64-px frames) / FLOW_SCALE (4 px, just above the protocol's
    3.6 px/frame digit speed), clipped to [-1, 1]. The exact motion of the protocol fits
    unclipped; estimator outliers beyond 4 px/frame saturate.

Estimators (`FLOW_ESTIMATORS`): "none"; "farneback" (OpenCV, no weights: the offline
default); "oracle" (the generator's exact displacement: an upper-bound ablation; needs
generated frames, not --test-file); "raft_small" / "raft_large" (torchvision RAFT with
pretrained weights: see mmtune.flow._raft for where the file is looked up). RAFT runs on
frames upsampled bilinearly 64 -> 128 px, grey -> 3 channels in [-1, 1], batched, on CUDA
when there is one; its flow is resized back to 64 px and halved into 64-px units.

Storage (farneback, raft_*): computed once per (split, estimator, its settings and weights,
input frames) and cached on disk (mmtune.flow._cache) as float16 (N, 9, 2, 32, 32): frames
1-9 only (frame 0 is zero by definition) at half resolution (2x2 mean), upsampled bilinearly
on load. 10,000 sequences take 369 MB (full float16 at 64 px would take 1.64 GB, over the
1 GB budget). Estimated flow is smooth, so the cost is small: on Farneback flow of the default
data the round trip moves values by 0.06 px rms on digit pixels (0.19 px rms over all pixels,
most of it at motion edges), against Farneback's own 0.5 px mean error there. Online training data (fresh every epoch) takes the same path in
memory, without the disk. The oracle is cheap (~1 s per 1,000 sequences) and is computed
exactly, at full resolution, every time: it is not cached.

Example:
    >>> from mmtune.data.datasets import DataConfig, MovingMNIST
    >>> data = MovingMNIST(DataConfig(train_size=8, val_size=4, test_size=4))
    >>> flow_inputs(data, "val", "oracle").shape
    (4, 10, 2, 64, 64)
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np

from mmtune.data.arrays import ArrayDataConfig
from mmtune.data.datasets import T_IN, DataConfig, MovingMNIST
from mmtune.errors import MMTuneError
from mmtune.flow import _cache
from mmtune.flow.estimators import FlowEstimator, Truth, estimator_names, get_estimator

FLOW_ESTIMATORS = ("none", *estimator_names())  # the one list: "none" + estimators._ESTIMATORS
FLOW_SCALE = 4.0  # px/frame that maps to 1.0
STORE_FACTOR = 2  # cached flow is stored at 1/STORE_FACTOR of the frame size
FLOW_CODE_VERSION = 1  # bump when a change here alters cached values

__all__ = [
    "FLOW_CODE_VERSION",
    "FLOW_ESTIMATORS",
    "FLOW_SCALE",
    "available_estimators",
    "check_estimator",
    "estimate_flow",
    "flow_inputs",
    "normalise",
]


def check_estimator(name: str, data: DataConfig | ArrayDataConfig | None = None) -> None:
    """Raise MMTuneError (one line: what is missing, what to do) unless `name` can run here.

    Args:
        name: one of FLOW_ESTIMATORS.
        data: when given, also check that the estimator fits this data (the oracle needs
            generated frames for every split, so not `test_file`).
    """
    if name not in FLOW_ESTIMATORS:
        raise MMTuneError(f"unknown flow estimator {name!r}; expected one of {list(FLOW_ESTIMATORS)}")
    if name == "none":
        return
    if isinstance(data, ArrayDataConfig):  # the flow cache and estimators read generated uint8 grey clips
        raise MMTuneError(f"flow {name!r} is offered for generated Moving MNIST only; an array file "
                          f"({data.path or data.train}) trains with --flow none")
    get_estimator(name).check()
    if name == "oracle" and data is not None and data.test_file:
        raise MMTuneError(
            f"oracle flow needs the generator's digit positions, which the test file {data.test_file} "
            "does not have; drop --test-file or use --flow farneback"
        )


def available_estimators(data: DataConfig | ArrayDataConfig | None = None) -> tuple[str, ...]:
    """The estimators that `check_estimator` accepts here (raft_* only with their weights)."""
    ok = []
    for name in FLOW_ESTIMATORS:
        try:
            check_estimator(name, data)
        except MMTuneError:
            continue
        ok.append(name)
    return tuple(ok)


def normalise(flow_px: np.ndarray) -> np.ndarray:
    """Flow in pixels -> model units: / FLOW_SCALE, clipped to [-1, 1] (float32)."""
    return np.clip(np.asarray(flow_px, np.float32) / FLOW_SCALE, -1.0, 1.0)


def estimate_flow(estimator: str, frames: np.ndarray, truth: Truth | None = None) -> np.ndarray:
    """Raw flow (N, T, 2, H, W) float32 in pixels of uint8 frames (N, T, H, W); see estimators."""
    check_estimator(estimator)
    if estimator == "none":
        raise MMTuneError("flow estimator 'none' estimates nothing")
    return get_estimator(estimator).estimate(frames, truth)


def _truth(data: MovingMNIST, split: str, epoch: int) -> Truth:
    clips = data.clips(split, epoch)
    pool = data.pools.test if split == "test" else data.pools.trainval
    return Truth(clips.positions[:, :T_IN], pool[clips.digit_ids])


def _downsample(flow: np.ndarray) -> np.ndarray:
    """(..., H, W) -> (..., H/f, W/f) by f x f means."""
    f = STORE_FACTOR
    *lead, h, w = flow.shape
    return flow.reshape(*lead, h // f, f, w // f, f).mean(axis=(-3, -1))


def _expand(stored: np.ndarray, size: tuple[int, int], chunk: int = 512) -> np.ndarray:
    """Stored (N, T-1, 2, h, w) float16 -> (N, T, 2, H, W) float16, frame 0 zero, bilinear."""
    import torch
    import torch.nn.functional as F

    n, t1, c = stored.shape[:3]
    out = np.zeros((n, t1 + 1, c, *size), np.float16)
    for lo in range(0, n, chunk):
        x = torch.from_numpy(np.asarray(stored[lo : lo + chunk], np.float32)).flatten(0, 1)
        up = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        out[lo : lo + chunk, 1:] = up.unflatten(0, (-1, t1)).numpy()
    return out


def _run(
    est: FlowEstimator,
    frames: np.ndarray,
    truth: Truth | None,
    write: Callable[[int, int, np.ndarray], None],
    desc: str,
    progress: bool | None,
) -> None:
    """Estimate and normalise `frames` chunk by chunk, handing each to `write(lo, hi, flow)`."""
    from tqdm import tqdm

    n = len(frames)
    with tqdm(total=n, desc=desc, unit="seq", file=sys.stderr, leave=False,
              disable=None if progress is None else not progress) as bar:
        for lo in range(0, n, est.chunk):
            hi = min(n, lo + est.chunk)
            part = None if truth is None else Truth(truth.positions[lo:hi], truth.digits[lo:hi])
            write(lo, hi, normalise(est.estimate(np.ascontiguousarray(frames[lo:hi]), part)))
            bar.update(hi - lo)


def _frames_digest(frames: np.ndarray) -> str:
    h = hashlib.sha256()
    for lo in range(0, len(frames), 1024):
        h.update(np.ascontiguousarray(frames[lo : lo + 1024]).data)
    return h.hexdigest()


def _meta(est: FlowEstimator, data: MovingMNIST, split: str, frames: np.ndarray) -> dict[str, Any]:
    """Everything that produced a cached flow array; its hash is the cache key."""
    cfg = asdict(data.cfg)
    fields = ["digits", "digits_root", "num_digits", "speed", "seed", f"{split}_size"]
    if split == "test":
        fields.append("test_file")
    return {
        "code_version": FLOW_CODE_VERSION,
        "estimator": est.identity(),
        "scale": FLOW_SCALE,
        "store": f"float16 frames 1-{T_IN - 1}, 1/{STORE_FACTOR} size, 2x2 mean",
        "split": split,
        "data": {k: cfg[k] for k in fields},
        "input_frames": {"shape": list(frames.shape), "sha256": _frames_digest(frames)},
    }


def flow_inputs(
    data: MovingMNIST, split: str, estimator: str, epoch: int = 0, progress: bool | None = None
) -> np.ndarray | None:
    """Flow channels (N, 10, 2, 64, 64) float16 of a split's input frames, or None for "none".

    Args:
        data: the splits.
        split: "train", "val" or "test".
        estimator: one of FLOW_ESTIMATORS.
        epoch: the epoch of online training data (ignored otherwise).
        progress: progress bar while computing; None shows it on a terminal only.

    Returns:
        Normalised flow (see the module docstring), frame 0 zero; None for "none".
    """
    check_estimator(estimator, data.cfg)
    if estimator == "none":
        return None
    est = get_estimator(estimator)
    frames = data.frames(split, epoch)[:, :T_IN]  # the targets never reach an estimator
    n, t, h, w = frames.shape
    desc = f"flow {estimator} {split}"
    if est.needs_truth:
        truth = _truth(data, split, epoch)
        full = np.zeros((n, t, 2, h, w), np.float16)
        _run(est, frames, truth, lambda lo, hi, f: full.__setitem__(slice(lo, hi), f), desc, progress)
        return full
    shape = (n, t - 1, 2, h // STORE_FACTOR, w // STORE_FACTOR)

    def build(out: np.ndarray) -> None:
        def write(lo: int, hi: int, flow: np.ndarray) -> None:
            out[lo:hi] = _downsample(flow[:, 1:])

        _run(est, frames, None, write, desc, progress)

    if split == "train" and data.cfg.online:  # fresh data every epoch: nothing to reuse
        stored = np.empty(shape, np.float16)
        build(stored)
    else:
        stored = _cache.load_or_build(_meta(est, data, split, frames), shape, build)
    return _expand(stored, (h, w))
