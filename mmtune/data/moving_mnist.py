"""Moving MNIST (Srivastava et al., 2015): digits bouncing in a 64x64 box, combined by max.

Every random number of sequence `i` is a counter-based hash of (seed, split stream, i, draw),
so a sequence depends only on those, not on how many are generated or on the platform:
the same seed gives the same test set on every machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from mmtune.errors import MMTuneError

DIGIT_SIZE = 28
FRAME_SIZE = 64  # H = W of every clip (Srivastava's box, the standard file's); the models' limits follow from it
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


@dataclass(frozen=True)
class MotionSpec:
    """How sequences move: the protocol's knobs."""

    num_digits: int = 2
    size: int = FRAME_SIZE
    frames: int = 20
    speed: float = 3.6  # px/frame: Srivastava's step 0.1 of the (64 - 28) px free range

    def __post_init__(self) -> None:
        if self.num_digits not in (1, 2, 3):
            raise MMTuneError(f"num_digits must be 1, 2 or 3, got {self.num_digits}")
        if self.size <= DIGIT_SIZE:
            raise MMTuneError(f"size must exceed the digit size {DIGIT_SIZE}, got {self.size}")
        if self.frames < 2:
            raise MMTuneError(f"frames must be >= 2, got {self.frames}")
        if not 0.0 <= self.speed <= self.size - DIGIT_SIZE:
            raise MMTuneError(f"speed must be in [0, {self.size - DIGIT_SIZE}] px/frame, got {self.speed}")


@dataclass(frozen=True)
class Clips:
    """Generated sequences and the ground truth that made them."""

    frames: np.ndarray  # (N, T, S, S) uint8
    positions: np.ndarray  # (N, T, D, 2) int16: top-left (row, col) of each digit per frame
    digit_ids: np.ndarray  # (N, D) int64: index of each digit in the pool


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, elementwise on uint64 (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def uniform(seed: int, stream: int, index: np.ndarray, draws: int) -> np.ndarray:
    """Uniform [0, 1) numbers of shape (len(index), draws), a pure function of its arguments."""
    key = _splitmix64(np.array([seed & 0xFFFFFFFFFFFFFFFF], np.uint64))
    key = _splitmix64(key ^ np.uint64(stream & 0xFFFFFFFFFFFFFFFF))
    h = _splitmix64(key ^ index.astype(np.uint64)[:, None])
    h = _splitmix64(h ^ np.arange(draws, dtype=np.uint64)[None, :])
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def trajectories(u: np.ndarray, spec: MotionSpec) -> np.ndarray:
    """Bouncing top-left positions (N, T, D, 2) int16 from per-digit draws u (N, D, 3)."""
    lim = float(spec.size - DIGIT_SIZE)
    pos = u[..., :2] * lim  # (N, D, 2) row, col
    theta = u[..., 2] * 2.0 * np.pi
    vel = np.stack([np.sin(theta), np.cos(theta)], axis=-1) * spec.speed
    out = np.empty((u.shape[0], spec.frames, u.shape[1], 2), np.int16)
    for t in range(spec.frames):
        out[:, t] = np.rint(pos)
        pos = pos + vel
        low, high = pos < 0.0, pos > lim  # bounce: reflect position and velocity
        pos = np.where(low, -pos, np.where(high, 2.0 * lim - pos, pos))
        vel = np.where(low | high, -vel, vel)
    return out


def generate(
    pool: np.ndarray, n: int, seed: int, stream: int, spec: MotionSpec = MotionSpec(), start: int = 0
) -> Clips:
    """Generate sequences start … start+n-1 of (seed, stream) from a digit pool (M, 28, 28) uint8.

    Example:
        >>> from mmtune.data.digits import load_digits
        >>> clips = generate(load_digits(), n=4, seed=0, stream=1)
        >>> clips.frames.shape
        (4, 20, 64, 64)
    """
    if n < 0:
        raise MMTuneError(f"number of sequences must be >= 0, got {n}")
    if pool.ndim != 3 or pool.shape[1:] != (DIGIT_SIZE, DIGIT_SIZE) or len(pool) == 0:
        raise MMTuneError(f"digit pool must be (M, 28, 28) with M > 0, got {pool.shape}")
    d = spec.num_digits
    u = uniform(seed, stream, np.arange(start, start + n), 4 * d).reshape(n, d, 4)
    digit_ids = np.minimum((u[..., 0] * len(pool)).astype(np.int64), len(pool) - 1)
    pos = trajectories(u[..., 1:], spec)
    frames = np.zeros((n, spec.frames, spec.size, spec.size), np.uint8)
    windows = sliding_window_view(frames, (DIGIT_SIZE, DIGIT_SIZE), axis=(2, 3), writeable=True)
    chunk = 1024
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        ni = np.arange(lo, hi)[:, None]
        ti = np.arange(spec.frames)[None, :]
        for k in range(d):
            rows, cols = pos[lo:hi, :, k, 0], pos[lo:hi, :, k, 1]
            patch = pool[digit_ids[lo:hi, k]][:, None]  # (n, 1, 28, 28)
            if k == 0:
                windows[ni, ti, rows, cols] = patch
            else:  # overlaps combine by max
                windows[ni, ti, rows, cols] = np.maximum(windows[ni, ti, rows, cols], patch)
    return Clips(frames=frames, positions=pos, digit_ids=digit_ids)


def load_standard_file(path: str) -> np.ndarray:
    """Load the literature's `mnist_test_seq.npy` (uint8, 20 x N x 64 x 64) as (N, 20, 64, 64)."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise MMTuneError(f"test file {path} does not exist; give the path of mnist_test_seq.npy") from None
    except ValueError as exc:
        raise MMTuneError(f"test file {path} is not a readable .npy file ({exc})") from None
    if arr.ndim != 4 or arr.shape[0] != 20 or arr.shape[2:] != (64, 64) or arr.dtype != np.uint8:
        raise MMTuneError(
            f"test file {path} must be uint8 of shape (20, N, 64, 64), got {arr.dtype} {arr.shape}"
        )
    return np.ascontiguousarray(np.swapaxes(arr, 0, 1))
