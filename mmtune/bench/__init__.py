"""Benchmarks: the training step per model and size, packed trials, data generation."""

from __future__ import annotations

from mmtune.bench.bench import (
    BenchConfig,
    BenchResult,
    count_train_flops,
    run_bench,
    size_config,
    write_json,
    write_markdown,
)

__all__ = [
    "BenchConfig",
    "BenchResult",
    "count_train_flops",
    "run_bench",
    "size_config",
    "write_json",
    "write_markdown",
]
