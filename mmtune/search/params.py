"""One search-space parameter (a fixed value, an int or float range, or categorical choices) and
its parser, without torch: the sweep's space parser (`spaces.parse_space`) builds on it, and
`mmtune report` reads a sweep's space.yaml with it (`space_params`) for the parameters' distributions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mmtune.errors import MMTuneError
from mmtune.experiment import MODEL_KEY

SPEC_KEYS = {"int": {"type", "low", "high", "step", "log"}, "float": {"type", "low", "high", "step", "log"},
             "categorical": {"type", "choices"}}
# A categorical of more choices is a range in disguise (and YAML takes seconds to build it): refused.
MAX_CHOICES = 10_000
# At most this many values of one parameter are built into a config at validation: every value of a
# smaller categorical or int range, else the ends and an evenly spread sample.
_CHECK_MAX = 64


@dataclass(frozen=True)
class Param:
    """One parameter: a fixed value, or an int/float range, or categorical choices."""

    kind: str  # fixed | int | float | categorical
    value: Any = None
    low: Any = None  # int for int ranges, float for float ranges, None otherwise
    high: Any = None
    step: Any = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any, name: str) -> Any:
        """The value of this parameter in an Optuna trial (fixed values are not suggested)."""
        if self.kind == "int":
            return trial.suggest_int(name, self.low, self.high, step=self.step or 1, log=self.log)
        if self.kind == "float":
            return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)
        if self.kind == "categorical":
            return trial.suggest_categorical(name, list(self.choices))
        return self.value

    def distribution(self) -> Any:
        """The Optuna distribution of this parameter (None when fixed)."""
        import optuna

        if self.kind == "int":
            return optuna.distributions.IntDistribution(self.low, self.high, log=self.log, step=self.step or 1)
        if self.kind == "float":
            return optuna.distributions.FloatDistribution(self.low, self.high, log=self.log, step=self.step)
        if self.kind == "categorical":
            return optuna.distributions.CategoricalDistribution(list(self.choices))
        return None

    def candidates(self) -> list[Any]:
        """Values worth checking against a config, at most 64 of them: every choice or int of a small
        parameter, else the first and last and an evenly spread sample between; a float range's bounds."""
        if self.kind == "fixed":
            return [self.value]
        if self.kind == "categorical":
            return [self.choices[i] for i in _spread(len(self.choices))]
        if self.kind == "int":  # the values on the step's grid (Optuna's too: an off-grid high is not sampled)
            step = self.step or 1
            return [self.low + i * step for i in _spread((self.high - self.low) // step + 1)]
        return [self.low, self.high]

    def middle(self) -> Any:
        """The value a run without search takes: the first choice, or the middle of the range
        (geometric with log; an int rounded onto its step)."""
        if self.kind == "fixed":
            return self.value
        if self.kind == "categorical":
            return self.choices[0]
        mid = math.sqrt(self.low * self.high) if self.log else (self.low + self.high) / 2
        if self.kind == "int":
            step = self.step or 1
            return int(self.low + round((mid - self.low) / step) * step)
        if self.step:
            return float(self.low + round((mid - self.low) / self.step) * self.step)
        return float(mid)

    @property
    def max_value(self) -> Any:
        """The largest value this parameter can take (for budgets like epochs)."""
        if self.kind == "fixed":
            return self.value
        if self.kind == "categorical":
            return max(self.choices)
        return self.high


def _spread(n: int) -> list[int]:
    """Indices into n values: all of them up to _CHECK_MAX, else _CHECK_MAX evenly spread, both ends included."""
    if n <= _CHECK_MAX:
        return list(range(n))
    return sorted({round(i * (n - 1) / (_CHECK_MAX - 1)) for i in range(_CHECK_MAX)})


def is_number(x: Any) -> bool:
    """A finite int or float, not a bool."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def parse_param(spec: Any, where: str) -> Param:
    """One parameter spec: a scalar, or a mapping with `type` int | float | categorical."""
    if spec is None or isinstance(spec, (str, int, float, bool)):
        return Param("fixed", value=spec)
    if isinstance(spec, list):
        raise MMTuneError(f"{where}: a list is ambiguous; write {{type: categorical, choices: {spec}}}")
    if not isinstance(spec, dict):
        raise MMTuneError(f"{where}: expected a scalar or a {{type: ...}} mapping, got {type(spec).__name__}")
    kind = spec.get("type")
    if not isinstance(kind, str) or kind not in SPEC_KEYS:  # a list here is unhashable: no `in` on it
        raise MMTuneError(f"{where}.type must be one of {list(SPEC_KEYS)}, got {kind!r}")
    reject_unknown(spec, sorted(SPEC_KEYS[kind]), where, f"{kind} spec key")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise MMTuneError(f"{where}.choices must be a non-empty list, got {choices!r}")
        if len(choices) > MAX_CHOICES:
            raise MMTuneError(f"{where}.choices must hold at most {MAX_CHOICES:,} choices (for more, use an int "
                              f"or float range instead), got {len(choices):,}")
        for c in choices:
            if not (c is None or isinstance(c, (str, int, float, bool))):
                raise MMTuneError(f"{where}.choices: each choice must be a scalar, got {c!r}")
        if len({repr(c) for c in choices}) != len(choices):
            raise MMTuneError(f"{where}.choices has duplicates: {choices}")
        return Param("categorical", choices=tuple(choices))
    for key in ("low", "high"):
        if key not in spec:
            raise MMTuneError(f"{where}: a {kind} range needs `{key}`")
        if not is_number(spec[key]):
            raise MMTuneError(f"{where}.{key} must be a finite number, got {spec[key]!r}")
    low, high, step, log = spec["low"], spec["high"], spec.get("step"), spec.get("log", False)
    if not isinstance(log, bool):
        raise MMTuneError(f"{where}.log must be true or false, got {log!r}")
    if kind == "int":
        for key, v in (("low", low), ("high", high), ("step", step)):
            if v is not None and not (isinstance(v, int) and not isinstance(v, bool)):
                raise MMTuneError(f"{where}.{key} must be an integer for type int, got {v!r}")
    if low > high:
        raise MMTuneError(f"{where}: inverted range: low {low} > high {high}")
    if log and low <= 0:
        raise MMTuneError(f"{where}: log scale needs low > 0, got low {low}")
    if step is not None:
        if not is_number(step) or step <= 0:
            raise MMTuneError(f"{where}.step must be a positive number, got {step!r}")
        if log:
            raise MMTuneError(f"{where}: step and log cannot be combined (Optuna)")
        if step > high - low and high != low:
            raise MMTuneError(f"{where}: empty range: step {step} is larger than high - low = {high - low}")
    if kind == "float":
        low, high = float(low), float(high)
    return Param(kind, low=low, high=high, step=step, log=log)


def reject_unknown(mapping: dict[str, Any], known: Any, where: str, what: str) -> None:
    """One MMTuneError line naming the first key of `mapping` not in `known`, and what is known."""
    unknown = [k for k in mapping if k not in known]
    if unknown:
        raise MMTuneError(f"{where}: unknown {what} {unknown[0]!r}; expected one of {list(known)}")


def sampled_params(models: Sequence[str], shared: Mapping[str, Param], model: str,
                   own: Mapping[str, Param]) -> dict[str, Param]:
    """The parameters a trial of `model` samples, by Optuna name: the model choice (when the space
    has several models), the shared ones by their name, the model's `own` as MODEL.NAME; fixed
    values are not sampled."""
    out: dict[str, Param] = {}
    if len(models) > 1:
        out[MODEL_KEY] = Param("categorical", choices=tuple(models))
    out.update({n: p for n, p in shared.items() if p.kind != "fixed"})
    out.update({f"{model}.{n}": p for n, p in own.items() if p.kind != "fixed"})
    return out


def space_params(raw: Any, model: str, where: str = "space.yaml") -> dict[str, Param]:
    """The parameters a trial of `model` sampled, by Optuna name, read from a sweep's space.yaml.

    The sweep validated the file against the model registry when it ran; this reads it again
    without the registry (and so without torch): the `model` choice, `shared`, and the model's
    section but its `preset`. Raises MMTuneError (one line) on a spec the parser refuses.
    """
    if not isinstance(raw, dict):
        raise MMTuneError(f"{where}: a search space is a mapping, got {type(raw).__name__}")
    sections = raw.get("models") or {}
    choice = raw.get(MODEL_KEY)
    if isinstance(choice, dict):
        models = list(choice.get("choices") or [])
    elif isinstance(choice, str):
        models = [choice]
    else:
        models = list(sections)
    shared = {n: parse_param(spec, f"{where}: shared.{n}") for n, spec in (raw.get("shared") or {}).items()}
    own = {n: parse_param(spec, f"{where}: models.{model}.{n}")
           for n, spec in (sections.get(model) or {}).items() if n != "preset"}
    return sampled_params(models, shared, model, own)
