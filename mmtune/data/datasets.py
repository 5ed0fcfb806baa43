"""Train / val / test splits: generated Moving MNIST (DataConfig) or your own array file (ArrayDataConfig)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmtune.data.arrays import ArrayDataConfig, ArrayDataset
from mmtune.data.digits import DIGIT_SOURCES, DigitPools, load_digits, split_digits
from mmtune.data.moving_mnist import Clips, MotionSpec, generate, load_standard_file
from mmtune.data.spec import MOVING_MNIST, ClipSpec, from_known_keys
from mmtune.errors import MMTuneError

T_IN = MOVING_MNIST.t_in  # input frames; the other 10 of the 20 are the targets
# Counter-RNG streams: one per split, so the splits never share a sequence.
STREAMS = {"train": 1, "val": 2, "test": 3}
_ONLINE_STREAM0 = 1000  # online training data: epoch e uses stream 1000 + e


@dataclass(frozen=True)
class DataConfig:
    """Which sequences a run sees.

    Defaults: embedded digits, 2 digits, 10,000 train / 1,000 val / 2,000 test sequences,
    seed 0. `online=True` draws fresh training sequences every epoch. `test_file` replaces
    the generated test split by the standard mnist_test_seq.npy (all of its sequences).
    """

    digits: str = "embedded"
    digits_root: str | None = None
    num_digits: int = 2
    speed: float = 3.6
    train_size: int = 10_000
    val_size: int = 1_000
    test_size: int = 2_000
    online: bool = False
    seed: int = 0
    test_file: str | None = None

    def __post_init__(self) -> None:
        if self.digits not in DIGIT_SOURCES:
            raise MMTuneError(f"digits must be one of {list(DIGIT_SOURCES)}, got {self.digits!r}")
        for name in ("train_size", "val_size", "test_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise MMTuneError(f"{name} must be a positive integer, got {value!r}")
        _ = self.motion  # validates num_digits and speed
        if self.test_file is not None and not Path(self.test_file).is_file():
            raise MMTuneError(f"test file {self.test_file} does not exist; give the path of mnist_test_seq.npy")

    @property
    def spec(self) -> ClipSpec:
        """The clips' shape: Moving MNIST's 10+10 frames of 1x64x64."""
        return MOVING_MNIST

    @property
    def motion(self) -> MotionSpec:
        """The motion protocol these sequences follow."""
        return MotionSpec(num_digits=self.num_digits, speed=self.speed)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DataConfig:
        """Build from a dict, rejecting unknown keys by name."""
        return from_known_keys(cls, values, "data config")


# The keys of a data section that name an array file (an ArrayDataConfig) rather than generated clips.
ARRAY_KEYS = ("path", "train", "val", "test")


def make_data_config(values: dict[str, Any]) -> DataConfig | ArrayDataConfig:
    """A data section as its typed config: an ArrayDataConfig when it names a file, else a DataConfig."""
    if any(values.get(k) for k in ARRAY_KEYS):
        return ArrayDataConfig.from_dict({k: v for k, v in values.items() if v is not None})
    return DataConfig.from_dict(values)


def open_data(cfg: DataConfig | ArrayDataConfig) -> MovingMNIST | ArrayDataset:
    """The dataset of a config: both have `spec`, `cfg` and `frames(split, epoch)`."""
    return ArrayDataset(cfg) if isinstance(cfg, ArrayDataConfig) else MovingMNIST(cfg)


class MovingMNIST:
    """The three splits of one DataConfig; generated lazily and kept in memory."""

    def __init__(self, cfg: DataConfig) -> None:
        self.cfg = cfg
        self.spec = cfg.spec
        self._pools: DigitPools | None = None
        self._cache: dict[str, Clips] = {}

    @property
    def pools(self) -> DigitPools:
        """Disjoint digit pools: train/val digits and held-out test digits."""
        if self._pools is None:
            self._pools = split_digits(load_digits(self.cfg.digits, self.cfg.digits_root))
        return self._pools

    def clips(self, split: str, epoch: int = 0) -> Clips:
        """Generated clips (frames + ground-truth motion) of a split; `epoch` matters when online."""
        if split not in STREAMS:
            raise MMTuneError(f"split must be one of {list(STREAMS)}, got {split!r}")
        key = f"train@{epoch}" if split == "train" and self.cfg.online else split
        if key not in self._cache:
            n = {"train": self.cfg.train_size, "val": self.cfg.val_size, "test": self.cfg.test_size}[split]
            pool = self.pools.test if split == "test" else self.pools.trainval
            stream = _ONLINE_STREAM0 + epoch if key.startswith("train@") else STREAMS[split]
            if key.startswith("train@"):
                self._cache = {k: v for k, v in self._cache.items() if not k.startswith("train@")}
            self._cache[key] = generate(pool, n, self.cfg.seed, stream, self.cfg.motion)
        return self._cache[key]

    def frames(self, split: str, epoch: int = 0) -> np.ndarray:
        """(N, 20, 64, 64) uint8 frames of a split (the standard file for test when given)."""
        if split == "test" and self.cfg.test_file:
            if "test_file" not in self._cache:
                arr = load_standard_file(self.cfg.test_file)
                self._cache["test_file"] = Clips(arr, np.zeros((0,), np.int16), np.zeros((0,), np.int64))
            return self._cache["test_file"].frames
        return self.clips(split, epoch).frames

