"""The schedulers and samplers a sweep can use: one table each, read by the CLI, the sweep and the adapter.

A new sampler is one entry here (its --help text and how to build it). The Ray side of a
scheduler lives in `tune_adapter` (the only module that imports Ray); an entry says what it needs:
ASHA rungs (`rungs=True`) or none (every trial runs to the end).

Example:
    >>> sorted(SAMPLERS)
    ['cmaes', 'random', 'tpe']
    >>> SCHEDULERS["asha"].rungs
    True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mmtune.errors import MMTuneError


@dataclass(frozen=True)
class Scheduler:
    """A trial scheduler: its --scheduler name, its --help text, and whether it stops trials at rungs."""

    name: str
    description: str
    rungs: bool  # ASHA on "epoch" (grace period, reduction factor); False: every trial to the end


@dataclass(frozen=True)
class Sampler:
    """An Optuna sampler: its --sampler name, its --help text, and `build(seed, samples)`."""

    name: str
    description: str
    build: Callable[[int, int], Any]


def _tpe(seed: int, samples: int) -> Any:
    import optuna

    startup = min(10, max(2, samples // 3))
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True, group=True,
                                      constant_liar=True)


def _random(seed: int, samples: int) -> Any:
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


def _cmaes(seed: int, samples: int) -> Any:
    import importlib.util

    import optuna

    if importlib.util.find_spec("cmaes") is None:
        raise MMTuneError("--sampler cmaes needs the cmaes package (pip install cmaes); or use tpe / random")
    return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)


SCHEDULERS: dict[str, Scheduler] = {s.name: s for s in (
    Scheduler("asha", "stop bad trials early on val_mse, one rung step per epoch", rungs=True),
    Scheduler("fifo", "run all to the end", rungs=False),
)}
SAMPLERS: dict[str, Sampler] = {s.name: s for s in (
    Sampler("tpe", "multivariate TPE, constant liar", _tpe),
    Sampler("random", "uniform random sampling", _random),
    Sampler("cmaes", "CMA-ES (needs the cmaes package)", _cmaes),
)}
DEFAULT_SCHEDULER = "asha"
DEFAULT_SAMPLER = "tpe"


def get_scheduler(name: str) -> Scheduler:
    """The scheduler `name`, or an MMTuneError naming the known ones."""
    try:
        return SCHEDULERS[name]
    except KeyError:
        raise MMTuneError(f"--scheduler must be one of {list(SCHEDULERS)}, got {name!r}") from None


def get_sampler(name: str) -> Sampler:
    """The sampler `name`, or an MMTuneError naming the known ones."""
    try:
        return SAMPLERS[name]
    except KeyError:
        raise MMTuneError(f"--sampler must be one of {list(SAMPLERS)}, got {name!r}") from None


def help_text(table: dict[str, Scheduler] | dict[str, Sampler], default: str, what: str = "") -> str:
    """The --help line of a table: each name with its description, and the default."""
    return (what + "; ".join(f"{n}: {e.description}" for n, e in table.items()) + f" (default {default})")
