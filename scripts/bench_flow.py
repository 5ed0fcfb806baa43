"""Seconds per 1,000 sequences (10 input frames -> 9 flow fields each) of each flow estimator.

Usage: python scripts/bench_flow.py [N_RAFT_SMALL] [N_RAFT_LARGE]   (default 10 and 5 sequences)
RAFT runs with random weights (its cost does not depend on them); 100 sequences for the others.
"""

from __future__ import annotations

import sys
import time

from mmtune.data.digits import load_digits
from mmtune.data.moving_mnist import generate
from mmtune.flow import _raft
from mmtune.flow.estimators import Farneback, Oracle, Raft, Truth


def main() -> None:
    n_small = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    n_large = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    pool = load_digits()
    clips = generate(pool, 100, 0, 1)
    frames, positions, digits = clips.frames[:, :10], clips.positions[:, :10], pool[clips.digit_ids]
    plan = [("farneback", Farneback(), 100), ("oracle", Oracle(), 100),
            ("raft_small", Raft("small"), n_small), ("raft_large", Raft("large"), n_large)]
    with _raft.random_weights_for_tests():  # timing only
        for name, est, n in plan:
            est.estimate(frames[:1], Truth(positions[:1], digits[:1]))  # warm-up / model load
            t0 = time.perf_counter()
            est.estimate(frames[:n], Truth(positions[:n], digits[:n]))
            dt = time.perf_counter() - t0
            print(f"{name:11s} {n:4d} seq in {dt:7.2f} s -> {dt / n * 1000:8.1f} s per 1,000 sequences", flush=True)


if __name__ == "__main__":
    main()
