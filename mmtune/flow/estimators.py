"""Flow estimators behind one interface: uint8 frames in, per-pixel displacement in pixels out.

Every estimator returns, for frames (N, T, H, W), an array (N, T, 2, H, W) float32 where
`[:, t]` is the motion from frame t-1 to frame t on frame t's pixel grid: channel 0 the
horizontal (column, +right) and channel 1 the vertical (row, +down) displacement, in pixels
of the given frames. Frame 0 has no predecessor and gets zeros. Only frames <= t are read
for `[:, t]`, so flow never looks ahead.
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from mmtune.data.moving_mnist import DIGIT_SIZE
from mmtune.errors import MMTuneError


class Truth(NamedTuple):
    """What the generator knows about the frames: digit placements and images."""

    positions: np.ndarray  # (N, T, D, 2) int: top-left (row, col) of each digit per frame
    digits: np.ndarray  # (N, D, 28, 28) uint8: the image of each digit


class FlowEstimator(ABC):
    """One optical-flow method; `identity()` names everything that changes its output."""

    name: ClassVar[str]
    needs_truth: ClassVar[bool] = False  # True: estimate() needs the generator's Truth
    chunk: ClassVar[int] = 256  # sequences per call when a split is processed in pieces

    def check(self) -> None:
        """Raise MMTuneError (one line) unless this estimator can run here."""
        return None  # most need nothing

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """JSON-able description of the settings (and weights) that produce the output."""

    @abstractmethod
    def estimate(self, frames: np.ndarray, truth: Truth | None = None) -> np.ndarray:
        """Flow (N, T, 2, H, W) float32 in pixels of frames (N, T, H, W) uint8; frame 0 is zero."""


def _check_frames(frames: np.ndarray) -> tuple[int, int, int, int]:
    if frames.ndim != 4 or frames.dtype != np.uint8:
        raise MMTuneError(f"frames must be (N, T, H, W) uint8, got {frames.dtype} {frames.shape}")
    return frames.shape  # type: ignore[return-value]


@dataclass(frozen=True)
class Farneback(FlowEstimator):
    """OpenCV's dense Farnebäck flow (no weights: the offline default). Args are OpenCV's."""

    name: ClassVar[str] = "farneback"
    pyr_scale: float = 0.5
    levels: int = 3
    winsize: int = 9
    iterations: int = 3
    poly_n: int = 5
    poly_sigma: float = 1.1
    threads: int = 0  # 0: $OMP_NUM_THREADS (Ray sets it per trial), else the usable cores; no effect on values

    def identity(self) -> dict[str, Any]:
        import cv2

        values = asdict(self)
        values.pop("threads")
        return {"name": self.name, **values, "opencv": cv2.__version__}

    def _pair(self, cur: np.ndarray, prev: np.ndarray) -> np.ndarray:
        import cv2

        # Flow from frame t back to frame t-1 lies on frame t's grid; its negation is the motion.
        back = cv2.calcOpticalFlowFarneback(  # type: ignore[call-overload]
            cur, prev, None, self.pyr_scale, self.levels, self.winsize,
            self.iterations, self.poly_n, self.poly_sigma, 0,
        )  # (H, W, 2) x, y
        return -back.transpose(2, 0, 1)

    def _sequence(self, clip: np.ndarray) -> np.ndarray:
        out = np.zeros((clip.shape[0], 2, *clip.shape[1:]), np.float32)
        for t in range(1, clip.shape[0]):
            out[t] = self._pair(np.ascontiguousarray(clip[t]), np.ascontiguousarray(clip[t - 1]))
        return out

    def estimate(self, frames: np.ndarray, truth: Truth | None = None) -> np.ndarray:
        _check_frames(frames)
        workers = self.threads or int(os.environ.get("OMP_NUM_THREADS") or 0) or len(os.sched_getaffinity(0))
        if workers == 1 or len(frames) == 1:
            return np.stack([self._sequence(c) for c in frames]) if len(frames) else _empty(frames)
        with ThreadPoolExecutor(workers) as pool:  # OpenCV releases the GIL
            return np.stack(list(pool.map(self._sequence, frames)))


def _empty(frames: np.ndarray) -> np.ndarray:
    n, t, h, w = frames.shape
    return np.zeros((n, t, 2, h, w), np.float32)


@dataclass(frozen=True)
class Oracle(FlowEstimator):
    """The exact displacement known to the generator: an upper-bound ablation.

    A pixel of frame t where a digit has ink gets that digit's displacement from frame t-1
    to t; where digits overlap, the digit whose pixel is brightest there (the one that wins
    the generator's max; the first on a tie). Pixels without ink get 0.
    """

    name: ClassVar[str] = "oracle"
    needs_truth: ClassVar[bool] = True
    chunk: ClassVar[int] = 512

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "rule": "ink pixels, brightest digit wins, background 0"}

    def estimate(self, frames: np.ndarray, truth: Truth | None = None) -> np.ndarray:
        n, t_len, h, w = _check_frames(frames)
        if truth is None:
            raise MMTuneError("oracle flow needs the generator's digit positions; these frames have none")
        pos, digits = truth.positions.astype(np.int64), truth.digits
        if pos.shape[:2] != (n, t_len) or digits.shape[:2] != (n, pos.shape[2]):
            raise MMTuneError(
                f"oracle truth does not fit frames {frames.shape}: positions {pos.shape}, digits {digits.shape}"
            )
        d = pos.shape[2]
        out = np.zeros((n, t_len, 2, h, w), np.float32)
        ink = np.zeros((n, d, h, w), np.uint8)
        windows = sliding_window_view(ink, (DIGIT_SIZE, DIGIT_SIZE), axis=(2, 3), writeable=True)
        ni = np.arange(n)
        for t in range(1, t_len):
            ink[:] = 0
            for k in range(d):
                windows[ni, k, pos[:, t, k, 0], pos[:, t, k, 1]] = digits[:, k]
            owner = ink.argmax(axis=1)  # (N, H, W): argmax keeps the first digit on a tie
            covered = ink.max(axis=1) > 0
            step = (pos[:, t] - pos[:, t - 1]).astype(np.float32)  # (N, D, 2) row, col
            sel = step[ni[:, None, None], owner]  # (N, H, W, 2)
            out[:, t, 0] = np.where(covered, sel[..., 1], 0.0)
            out[:, t, 1] = np.where(covered, sel[..., 0], 0.0)
        return out


@dataclass(frozen=True)
class Raft(FlowEstimator):
    """torchvision's RAFT with its pretrained weights; frames upsampled to >= 128 px.

    Args:
        variant: "small" or "large".
        num_flow_updates: RAFT's refinement iterations (torchvision's default 12).
        batch_size: frame pairs per forward pass (0: 256 on CUDA, 32 on CPU).
        device: "auto" (CUDA when there is one), "cpu" or "cuda".
    """

    name: ClassVar[str] = "raft"
    chunk: ClassVar[int] = 256
    variant: str = "small"
    num_flow_updates: int = 12
    batch_size: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.variant not in ("small", "large"):
            raise MMTuneError(f"RAFT variant must be 'small' or 'large', got {self.variant!r}")
        if self.num_flow_updates < 1:
            raise MMTuneError(f"num_flow_updates must be >= 1, got {self.num_flow_updates}")

    def check(self) -> None:
        from mmtune.flow import _raft

        _raft.resolve_weights(self.variant)

    def identity(self) -> dict[str, Any]:
        from mmtune.flow import _raft

        return {
            "name": f"raft_{self.variant}",
            "num_flow_updates": self.num_flow_updates,
            "weights_sha256": _raft.weights_digest(self.variant),
        }

    def estimate(self, frames: np.ndarray, truth: Truth | None = None) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        from mmtune.flow import _raft

        n, t_len, h, w = _check_frames(frames)
        out = np.zeros((n, t_len, 2, h, w), np.float32)
        if n == 0 or t_len < 2:
            return out
        device = _raft.pick_device(self.device)
        model = _raft.load_model(self.variant, device)
        factor = max(1, math.ceil(_raft.MIN_SIZE / min(h, w)))  # RAFT needs >= 128 px
        if (h * factor) % 8 or (w * factor) % 8:
            raise MMTuneError(f"RAFT needs frame sizes that scale to multiples of 8, got {h}x{w}")
        bs = self.batch_size or (256 if device.type == "cuda" else 32)
        cur = frames[:, 1:].reshape(-1, h, w)  # pair p: frame t = p % (T-1) + 1 of clip p // (T-1)
        prev = frames[:, :-1].reshape(-1, h, w)
        flat = np.empty((len(cur), 2, h, w), np.float32)
        with torch.inference_mode():
            for lo in range(0, len(cur), bs):
                a = _raft.prepare(cur[lo : lo + bs], factor, device)  # (B, 3, fH, fW) in [-1, 1]
                b = _raft.prepare(prev[lo : lo + bs], factor, device)
                back = model(a, b, num_flow_updates=self.num_flow_updates)[-1]  # (B, 2, fH, fW)
                # Back to the frames' grid; values in their pixels; negated: t-1 -> t motion.
                flow = F.interpolate(back.float(), size=(h, w), mode="bilinear", align_corners=False)
                flat[lo : lo + bs] = (flow * (-1.0 / factor)).cpu().numpy()
        out[:, 1:] = flat.reshape(n, t_len - 1, 2, h, w)
        return out


_ESTIMATORS: dict[str, FlowEstimator] = {
    "farneback": Farneback(),
    "oracle": Oracle(),
    "raft_small": Raft("small"),
    "raft_large": Raft("large"),
}


def estimator_names() -> tuple[str, ...]:
    """The registered estimators' names, in registration order (`FLOW_ESTIMATORS` adds "none")."""
    return tuple(_ESTIMATORS)


def get_estimator(name: str) -> FlowEstimator:
    """The estimator registered as `name` (not "none")."""
    try:
        return _ESTIMATORS[name]
    except KeyError:
        raise MMTuneError(f"unknown flow estimator {name!r}; expected one of {sorted(_ESTIMATORS)}") from None
