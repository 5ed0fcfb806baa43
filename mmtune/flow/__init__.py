"""Optical-flow input channels for ConvTAU: estimate, normalise, cache, serve.

What the model sees: for each input frame (10 of generated data), 2 channels appended to it
(ConvTAU takes 3 input channels; C + 2 on C-channel array files), from `flow_inputs(data, split, estimator)`:
  - Flow at frame t is the motion from frame t-1 to frame t, on frame t's pixels: channel 0
    horizontal (+right), channel 1 vertical (+down). It is computed from input frames <= t
    only; the 10 target frames are never read. Frame 0 has no predecessor and gets zeros.
  - Normalisation: pixels (64-px frames) / FLOW_SCALE (4 px, just above the protocol's
    3.6 px/frame digit speed), clipped to [-1, 1]. The exact motion of the protocol fits
    unclipped; estimator outliers beyond 4 px/frame saturate.

Your own clips (an array file, `mmtune.data.arrays`): "farneback" only (the others are one
line), on the channel mean of each window's t_in input frames (C = 1: the frame itself) as uint8
0-255, normalised the same way; cached like the generated data's (the key covers the array
config, the split's windows and the sha256 of those grey frames), computed from the file chunk by
chunk; frames with an odd H or W are stored at full size. The flow a split is served with is
held in memory, float16 (N, t_in, 2, H, W), beside the file's windows that are read per batch.

Estimators (`FLOW_ESTIMATORS`): "none"; "farneback" (OpenCV, no weights: the offline
default); "oracle" (the generator's exact displacement: an upper-bound ablation; needs
generated frames, not --test-file or an array file); "raft_small" / "raft_large" (torchvision
RAFT with pretrained weights: see mmtune.flow._raft for where the file is looked up; generated
data only). RAFT runs on frames upsampled bilinearly 64 -> 128 px, grey -> 3 channels in
[-1, 1], batched, on CUDA when there is one; its flow is resized back to 64 px and halved into 64-px units.

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

from mmtune.data.arrays import CHUNK_BYTES, ArrayDataConfig, ArrayDataset, Windows
from mmtune.data.datasets import DataConfig, MovingMNIST
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
    if isinstance(data, ArrayDataConfig) and name != "farneback":  # no digit positions, no RAFT resizing
        raise MMTuneError(f"flow {name!r} is offered for generated Moving MNIST only; for an array file "
                          f"({data.path or data.train}) --flow farneback is the one offered (or none)")
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
    return Truth(clips.positions[:, : data.spec.t_in], pool[clips.digit_ids])


def _store_factor(h: int, w: int) -> int:
    """STORE_FACTOR where it divides H and W; 1 (full resolution) for an odd frame size."""
    return STORE_FACTOR if h % STORE_FACTOR == 0 and w % STORE_FACTOR == 0 else 1


def _downsample(flow: np.ndarray, f: int = STORE_FACTOR) -> np.ndarray:
    """(..., H, W) -> (..., H/f, W/f) by f x f means (f = 1: unchanged)."""
    if f == 1:
        return flow
    *lead, h, w = flow.shape
    return flow.reshape(*lead, h // f, f, w // f, f).mean(axis=(-3, -1))


def _expand(stored: np.ndarray, size: tuple[int, int], chunk: int = 512) -> np.ndarray:
    """Stored (N, T-1, 2, h, w) float16 -> (N, T, 2, H, W) float16, frame 0 zero, bilinear
    (copied as it is when stored at full resolution)."""
    import torch
    import torch.nn.functional as F

    n, t1, c = stored.shape[:3]
    out = np.zeros((n, t1 + 1, c, *size), np.float16)
    if tuple(stored.shape[-2:]) == tuple(size):
        for lo in range(0, n, chunk):
            out[lo : lo + chunk, 1:] = stored[lo : lo + chunk]
        return out
    for lo in range(0, n, chunk):
        x = torch.from_numpy(np.asarray(stored[lo : lo + chunk], np.float32)).flatten(0, 1)
        up = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        out[lo : lo + chunk, 1:] = up.unflatten(0, (-1, t1)).numpy()
    return out


def _run(
    est: FlowEstimator,
    frames: np.ndarray | _GreyInputs,
    truth: Truth | None,
    write: Callable[[int, int, np.ndarray], None],
    desc: str,
    progress: bool | None,
    chunk: int | None = None,
) -> None:
    """Estimate and normalise `frames` chunk by chunk (`chunk` sequences, default the estimator's),
    handing each to `write(lo, hi, flow)`."""
    from tqdm import tqdm

    n, step = len(frames), chunk or est.chunk
    with tqdm(total=n, desc=desc, unit="seq", file=sys.stderr, leave=False,
              disable=None if progress is None else not progress) as bar:
        for lo in range(0, n, step):
            hi = min(n, lo + step)
            part = None if truth is None else Truth(truth.positions[lo:hi], truth.digits[lo:hi])
            write(lo, hi, normalise(est.estimate(np.ascontiguousarray(frames[lo:hi]), part)))
            bar.update(hi - lo)


def _frames_digest(frames: Any, chunk: int = 1024) -> str:
    """sha256 of uint8 frames (an array, or anything sliced into arrays), read `chunk` sequences at a time."""
    h = hashlib.sha256()
    for lo in range(0, len(frames), chunk):
        h.update(np.ascontiguousarray(frames[lo : lo + chunk]).data)
    return h.hexdigest()


def _key(est: FlowEstimator, split: str, store: str, frames: Any, digest_chunk: int = 1024) -> dict[str, Any]:
    """What every cached flow array's key holds: the code, the estimator, the scale, how it is
    stored, the split and its input frames (shape and sha256)."""
    return {
        "code_version": FLOW_CODE_VERSION,
        "estimator": est.identity(),
        "scale": FLOW_SCALE,
        "store": store,
        "split": split,
        "input_frames": {"shape": list(frames.shape), "sha256": _frames_digest(frames, digest_chunk)},
    }


def _meta(est: FlowEstimator, data: MovingMNIST, split: str, frames: np.ndarray) -> dict[str, Any]:
    """Everything that produced a cached flow array of generated data; its hash is the cache key."""
    cfg = asdict(data.cfg)
    fields = ["digits", "digits_root", "num_digits", "speed", "seed", f"{split}_size"]
    if split == "test":
        fields.append("test_file")
    store = f"float16 frames 1-{frames.shape[1] - 1}, 1/{STORE_FACTOR} size, 2x2 mean"
    return {**_key(est, split, store, frames), "data": {k: cfg[k] for k in fields}}


def _stored(est: FlowEstimator, frames: Any, f: int, desc: str, progress: bool | None,
            chunk: int | None = None) -> tuple[tuple[int, ...], Callable[[np.ndarray], None]]:
    """The shape of `frames`' stored flow (frames 1.., at 1/f size) and the function that fills it."""
    n, t, h, w = frames.shape

    def build(out: np.ndarray) -> None:
        def write(lo: int, hi: int, flow: np.ndarray) -> None:
            out[lo:hi] = _downsample(flow[:, 1:], f)

        _run(est, frames, None, write, desc, progress, chunk)

    return (n, t - 1, 2, h // f, w // f), build


def _grey(windows: np.ndarray) -> np.ndarray:
    """(B, T, C, H, W) float32 in [0, 1] -> (B, T, H, W) uint8: the channel mean (C = 1: the frame), x255."""
    mean = windows[:, :, 0] if windows.shape[2] == 1 else windows.mean(axis=2)
    return np.clip(np.rint(mean * np.float32(255.0)), 0, 255).astype(np.uint8)


class _GreyInputs:
    """The input frames of a split's windows as uint8 grey (N, t_in, H, W), read from the file per slice.

    Only frames 0 .. t_in-1 of each window are read (the targets never reach an estimator); `rows`
    windows take about `CHUNK_BYTES` as float32, the chunk the flow is computed and hashed in.
    """

    def __init__(self, windows: Windows, t_in: int) -> None:
        self.inputs = Windows(windows.source, windows.index, t_in)
        n, _, c, h, w = self.inputs.shape
        self.shape = (n, t_in, h, w)
        self.rows = max(1, CHUNK_BYTES // (t_in * c * h * w * 4))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, part: slice) -> np.ndarray:
        lo, hi, _ = part.indices(len(self))
        return _grey(self.inputs[np.arange(lo, hi)])


def _array_meta(
    est: FlowEstimator, data: ArrayDataset, split: str, grey: _GreyInputs, f: int
) -> dict[str, Any]:
    """The cache key's inputs for an array file: the config, the split's windows and their input frames."""
    index = np.ascontiguousarray(grey.inputs.index, np.int64)
    size = f"1/{f} size, {f}x{f} mean" if f > 1 else "full size"
    return {**_key(est, split, f"float16 frames 1-{grey.shape[1] - 1}, {size}", grey, grey.rows),
            "grey": "channel mean of the input frames, x255 rounded to uint8", "array_data": asdict(data.cfg),
            "windows": {"count": len(index), "sha256": hashlib.sha256(index.data).hexdigest()}}


def _array_flow(est: FlowEstimator, data: ArrayDataset, split: str, progress: bool | None) -> np.ndarray:
    """Flow (N, t_in, 2, H, W) float16 of an array file's split, on the channel mean of its input frames.

    Computed chunk by chunk from the file and cached like generated data's (at half size where H
    and W are even, else at full size); memory holds one chunk of frames and the flow.
    """
    grey = _GreyInputs(data.frames(split), data.spec.t_in)
    n, t, h, w = grey.shape
    if t == 1:  # one input frame: no predecessor, all zero
        return np.zeros((n, 1, 2, h, w), np.float16)
    f = _store_factor(h, w)
    shape, build = _stored(est, grey, f, f"flow {est.name} {split}", progress, min(est.chunk, grey.rows))
    stored = _cache.load_or_build(_array_meta(est, data, split, grey, f), shape, build)
    return _expand(stored, (h, w))


def flow_inputs(
    data: MovingMNIST | ArrayDataset, split: str, estimator: str, epoch: int = 0, progress: bool | None = None
) -> np.ndarray | None:
    """Flow channels (N, t_in, 2, H, W) float16 of a split's input frames, or None for "none".

    Args:
        data: the splits: generated Moving MNIST (N, 10, 2, 64, 64), or an array file (farneback
            only, on the channel mean of its frames).
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
    if isinstance(data, ArrayDataset):
        return _array_flow(est, data, split, progress)
    frames = data.frames(split, epoch)[:, : data.spec.t_in]  # the targets never reach an estimator
    n, t, h, w = frames.shape
    desc = f"flow {estimator} {split}"
    if est.needs_truth:
        truth = _truth(data, split, epoch)
        full = np.zeros((n, t, 2, h, w), np.float16)
        _run(est, frames, truth, lambda lo, hi, f: full.__setitem__(slice(lo, hi), f), desc, progress)
        return full
    shape, build = _stored(est, frames, STORE_FACTOR, desc, progress)
    if split == "train" and data.cfg.online:  # fresh data every epoch: nothing to reuse
        stored = np.empty(shape, np.float16)
        build(stored)
    else:
        stored = _cache.load_or_build(_meta(est, data, split, frames), shape, build)
    return _expand(stored, (h, w))
