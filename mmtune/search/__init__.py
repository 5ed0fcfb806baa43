"""Hyperparameter search: YAML search spaces (Optuna define-by-run) run by Ray Tune with ASHA.

`spaces` parses and validates the files, `sweep` runs a sweep end to end (plan, run, evaluate,
write; the files it leaves are `mmtune.experiment`'s: names, typed records, readers and writers),
`algorithms` is the one table of schedulers and samplers, `trial_log` builds what a trial reports
each epoch, `tune_adapter` is the only module that imports Ray. Its command line is `mmtune.cli.search`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Param", "SearchSpace", "Suggest", "load_space", "parse_space"]


def __getattr__(name: str) -> Any:
    """`spaces`' names, imported on first use: `spaces` needs the model registry (and torch), which
    `experiment` and the report, reading a sweep's files, do not."""
    if name in __all__:
        from mmtune.search import spaces

        return getattr(spaces, name)
    raise AttributeError(f"module 'mmtune.search' has no attribute {name!r}")
