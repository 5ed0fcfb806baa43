"""Hyperparameter search: YAML search spaces (Optuna define-by-run) run by Ray Tune with ASHA.

`spaces` parses and validates the files, `sweep` runs a sweep end to end and writes its
results, `tune_adapter` is the only module that imports Ray, `cli` is `mmtune search`.
"""

from __future__ import annotations

from mmtune.search.spaces import Param, SearchSpace, Suggest, load_space, parse_space

__all__ = ["Param", "SearchSpace", "Suggest", "load_space", "parse_space"]
