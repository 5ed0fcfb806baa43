"""Hyperparameter search: YAML search spaces (Optuna define-by-run) run by Ray Tune with ASHA.

`spaces` parses and validates the files, `sweep` runs a sweep end to end (plan, run, evaluate,
write), `experiment` owns the experiment directory (file names, typed records, readers and writers),
`algorithms` is the one table of schedulers and samplers, `trial_log` builds what a trial reports
each epoch, `tune_adapter` is the only module that imports Ray, `cli` is `mmtune search`.
"""

from __future__ import annotations

from mmtune.search.spaces import Param, SearchSpace, Suggest, load_space, parse_space

__all__ = ["Param", "SearchSpace", "Suggest", "load_space", "parse_space"]
