"""Benchmarks: the training step per model and size, packed trials, data generation.

`bench` needs torch; its names import on first use, so that `mmtune report` (whose CLI lists
`mmtune bench` too) runs without it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BenchConfig", "BenchResult", "count_train_flops", "run_bench", "size_config", "write_json",
           "write_markdown"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from mmtune.bench import bench

        return getattr(bench, name)
    raise AttributeError(f"module 'mmtune.bench' has no attribute {name!r}")
