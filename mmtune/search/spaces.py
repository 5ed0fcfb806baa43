"""Search spaces as YAML files, parsed once into typed specs and sampled define-by-run with Optuna.

Schema (every key is optional unless marked; unknown keys are rejected by name)::

    description: free text
    model: conv_tau                    # a fixed model, or
    model: {choices: [simple_lstm, conv_tau]}   # an Optuna categorical, sampled first.
                                       # Absent: the models under `models:` (one: fixed; more: a choice).
    model: {choices: [conv_tau, simple_lstm], weights: [3, 1]}   # or: trial i's model is fixed in
                                       # advance, in these proportions, interleaved (Optuna's
                                       # enqueue_trial); TPE still samples everything else.
    shared:                            # TrainConfig fields, for every model
      lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
      batch_size: {type: categorical, choices: [8, 16]}
      epochs: 4                        # a fixed value; also ASHA's max_t unless --max-epochs
    models:
      conv_tau:
        preset: small                  # a preset of the model (its model and train settings)
        N_T: {type: int, low: 1, high: 4}             # model config fields -> model_cfg
        enc_kernel: {type: categorical, choices: [3, 5]}
        kl_weight: {type: float, low: 0.0, high: 0.2}  # TrainConfig fields -> train
        flow: {type: categorical, choices: [none, farneback, oracle]}
    data: {train_size: 256, val_size: 64, test_size: 128}   # fixed DataConfig overrides, or
    data: {path: clips.npy, layout: NTCHW, t_in: 8, t_out: 8}   # an array file (ArrayDataConfig;
                                       # paths relative to the working folder)
    sweep: {samples: 8, grace_period: 1, reduction_factor: 2}  # defaults of the CLI flags
                                       # (samples, max_epochs, grace_period, reduction_factor)

A parameter is a fixed scalar, or one of
``{type: int, low, high, step?: 1, log?: false}``, ``{type: float, low, high, step?, log?: false}``,
``{type: categorical, choices: [...]}`` (at most 10,000 choices; validation builds a config at
the ends of a larger categorical or int range and at most 62 values between). Optuna names:
``model``, the shared names as written (``lr``), per-model names prefixed by the model
(``conv_tau.N_T``) so that each model's distributions stay distinct in the study. ``seed`` and ``device`` are set by the sweep
(``--seed``, ``--gpus-per-trial``), not by the space.

Example:
    >>> space = load_space("search_spaces/smoke.yaml")
    >>> import optuna
    >>> params = optuna.create_study().ask()  # doctest: +SKIP
    >>> trial = space.trial_config(Suggest(space)(params))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mmtune.data.arrays import ArrayDataConfig, absolute_paths
from mmtune.data.datasets import ARRAY_KEYS, DataConfig, make_data_config
from mmtune.errors import MMTuneError
from mmtune.experiment import MODEL_KEY
from mmtune.flow import check_estimator
from mmtune.models import config_fields, list_models
from mmtune.search.params import (
    MAX_CHOICES,
    Param,
    is_number,
    parse_param,
    reject_unknown,
    sampled_params,
)
from mmtune.training.config import TrainConfig, TrialConfig, build_trial

TOP_KEYS = ("description", "model", "shared", "models", "data", "sweep")
# Defaults of the CLI flags: integers, but reduction_factor and final_share (numbers) and time_budget (a duration).
SWEEP_KEYS = ("samples", "max_epochs", "grace_period", "reduction_factor", "time_budget", "final_share")
TRAIN_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))
RESERVED_TRAIN = {"seed": "--seed", "device": "--gpus-per-trial"}
# libyaml's parser when PyYAML has it: a 10,000-choice space loads in a tenth of a second, not a half.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class ModelSection:
    """The per-model part of a space: an optional preset and parameters split by destination."""

    preset: str | None = None
    model_params: dict[str, Param] = field(default_factory=dict)  # -> model_cfg
    train_params: dict[str, Param] = field(default_factory=dict)  # -> TrainConfig


@dataclass(frozen=True)
class SearchSpace:
    """A parsed search-space file."""

    path: str
    models: tuple[str, ...]  # one: fixed; more: the `model` categorical
    sections: dict[str, ModelSection]
    model_weights: tuple[float, ...] | None = None  # per model: the share of trials it is given
    shared: dict[str, Param] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    sweep: dict[str, Any] = field(default_factory=dict)  # defaults of --samples, --max-epochs, ...

    @property
    def max_epochs(self) -> int:
        """The largest epoch budget a trial can get (TrainConfig's default when the space is silent)."""
        values = [p.max_value for s in self.sections.values() for n, p in s.train_params.items() if n == "epochs"]
        if "epochs" in self.shared:
            values.append(self.shared["epochs"].max_value)
        return int(max(values)) if values else TrainConfig().epochs

    def model_plan(self, samples: int) -> list[str]:
        """The model of each of `samples` trials under `model_weights` (empty without weights).

        Smooth weighted round-robin: each family gets its share of the trials, spread out over the
        sweep rather than in blocks, so that every family starts early and ASHA compares them all.
        """
        if not self.model_weights:
            return []
        total = sum(self.model_weights)
        credit = [0.0] * len(self.models)
        plan = []
        for _ in range(samples):
            credit = [c + w for c, w in zip(credit, self.model_weights, strict=True)]
            i = max(range(len(credit)), key=credit.__getitem__)
            credit[i] -= total
            plan.append(self.models[i])
        return plan

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Define-by-run: sample the model first, then only that model's parameters."""
        out: dict[str, Any] = {}
        if len(self.models) > 1:
            model = trial.suggest_categorical(MODEL_KEY, list(self.models))
            out[MODEL_KEY] = model
        else:
            model = self.models[0]
        for name, p in self.shared.items():
            if p.kind != "fixed":
                out[name] = p.suggest(trial, name)
        section = self.sections[model]
        for name, p in {**section.model_params, **section.train_params}.items():
            if p.kind != "fixed":
                out[f"{model}.{name}"] = p.suggest(trial, f"{model}.{name}")
        return out

    def default_params(self) -> dict[str, Any]:
        """The space's own default config, by Optuna name: the first model, and of each sampled
        parameter the middle of its range (geometric on a log scale; ints rounded) or its first choice.

        What a researcher would run without searching; `--no-search` trains it.
        """
        out: dict[str, Any] = {}
        model = self.models[0]
        if len(self.models) > 1:
            out[MODEL_KEY] = model
        section = self.sections[model]
        named = {**self.shared, **{f"{model}.{n}": p for n, p in {**section.model_params,
                                                                   **section.train_params}.items()}}
        for name, p in named.items():
            if p.kind != "fixed":
                out[name] = p.middle()
        return out

    def distributions(self, model: str) -> dict[str, Any]:
        """The Optuna distributions a trial of `model` samples, by Optuna name."""
        section = self.sections[model]
        own = {**section.model_params, **section.train_params}
        return {n: p.distribution() for n, p in sampled_params(self.models, self.shared, model, own).items()}

    def trial_config(self, params: dict[str, Any], train_overrides: dict[str, Any] | None = None) -> TrialConfig:
        """The TrialConfig of sampled `params` (flat Optuna names); `train_overrides` win (seed, device...)."""
        model = params.get(MODEL_KEY, self.models[0]) if len(self.models) > 1 else self.models[0]
        if model not in self.sections:
            raise MMTuneError(f"{self.path}: sampled model {model!r} is not in the space {list(self.models)}")
        section = self.sections[model]
        prefix = f"{model}."
        sampled = {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}

        def pick(name: str, p: Param, key: str) -> Any:
            return p.value if p.kind == "fixed" else params.get(key, sampled.get(name))

        train = {n: pick(n, p, n) for n, p in self.shared.items()}
        train.update({n: pick(n, p, prefix + n) for n, p in section.train_params.items()})
        train.update(train_overrides or {})
        model_values = {n: pick(n, p, prefix + n) for n, p in section.model_params.items()}
        return build_trial(model, section.preset, model_values, train, self.data)


class Suggest:
    """The picklable define-by-run callable given to OptunaSearch: `Suggest(space)(trial) -> dict`.

    Besides the sampled parameters it returns `optuna_trial` (the Optuna trial number), so that
    each Ray trial can be matched to its Optuna trial.
    """

    def __init__(self, space: SearchSpace) -> None:
        self.space = space

    def __call__(self, trial: Any) -> dict[str, Any]:
        out = self.space.suggest(trial)
        out["optuna_trial"] = trial.number
        return out


# -- parsing --------------------------------------------------------------------------------


def load_space(path: str | Path) -> SearchSpace:
    """Read and validate a search-space YAML file; any problem is one MMTuneError naming file and key."""
    path = Path(path)
    if not path.is_file():
        raise MMTuneError(f"search space {path} does not exist")
    text = path.read_text()
    try:
        too_long = _long_list(text)
        if too_long:
            key, n = too_long
            raise MMTuneError(f"{path}: {key} must hold at most {MAX_CHOICES:,} items (for a categorical of more, "
                              f"use an int or float range instead), got {n:,}")
        raw = yaml.load(text, Loader=_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise MMTuneError(f"{path}: not valid YAML{where}: {problem}") from None
    return parse_space(raw, str(path))


def _long_list(text: str) -> tuple[str, int] | None:
    """The dotted key and length of the first YAML list longer than MAX_CHOICES, from the parser's events.

    The events of a 10^6-item list take about a second; building its objects (PyYAML resolves and
    constructs every scalar in Python) takes several, so an absurd list is refused before it is built.
    """
    frames: list[list[Any]] = []  # per open collection: [is_mapping, nodes seen, the key being read]
    for event in yaml.parse(text, Loader=_LOADER):
        if isinstance(event, (yaml.ScalarEvent, yaml.AliasEvent, yaml.CollectionStartEvent)):
            if frames:
                top = frames[-1]
                if top[0] and top[1] % 2 == 0:  # a mapping's key
                    top[2] = event.value if isinstance(event, yaml.ScalarEvent) else "?"
                top[1] += 1
            if isinstance(event, yaml.CollectionStartEvent):
                frames.append([isinstance(event, yaml.MappingStartEvent), 0, None])
        elif isinstance(event, yaml.CollectionEndEvent):
            is_mapping, n, _ = frames.pop()
            if not is_mapping and n > MAX_CHOICES:
                return ".".join(str(f[2]) if f[0] else str(f[1] - 1) for f in frames) or "the top-level list", n
    return None


def parse_space(raw: Any, where: str = "<space>") -> SearchSpace:
    """Validate a loaded YAML mapping and build its SearchSpace."""
    if not isinstance(raw, dict):
        raise MMTuneError(f"{where}: a search space is a mapping with keys {list(TOP_KEYS)}, got {type(raw).__name__}")
    reject_unknown(raw, TOP_KEYS, where, "top-level key")
    known_models = list_models()
    sections_raw = raw.get("models") or {}
    if not isinstance(sections_raw, dict):
        raise MMTuneError(f"{where}: models must be a mapping of model name to its parameters")
    for name in sections_raw:
        if name not in known_models:
            raise MMTuneError(f"{where}: models.{name}: unknown model; expected one of {known_models}")
    models, weights = _parse_model_choice(raw.get(MODEL_KEY), list(sections_raw), where, known_models)
    for name in sections_raw:
        if name not in models:
            raise MMTuneError(f"{where}: models.{name}: not among the model choices {list(models)}")

    shared_raw = raw.get("shared") or {}
    if not isinstance(shared_raw, dict):
        raise MMTuneError(f"{where}: shared must be a mapping of TrainConfig field to parameter")
    shared = {}
    for name, spec in shared_raw.items():
        _check_train_field(name, f"{where}: shared.{name}")
        shared[name] = parse_param(spec, f"{where}: shared.{name}")

    sections: dict[str, ModelSection] = {}
    for model in models:
        sections[model] = _parse_section(model, sections_raw.get(model) or {}, f"{where}: models.{model}")

    data, sweep = _parse_data(raw.get("data") or {}, where), _parse_sweep(raw.get("sweep") or {}, where)
    description = raw.get("description") or ""
    space = SearchSpace(where, models, sections, weights, shared, dict(data), str(description), dict(sweep))
    _check_configs(space)
    return space


def _parse_data(data: Any, where: str) -> dict[str, Any]:
    """The space's fixed data section: Moving MNIST's DataConfig fields, or an array file's (its paths made
    absolute, its header read now so that a bad file is one line)."""
    if not isinstance(data, dict):
        raise MMTuneError(f"{where}: data must be a mapping of DataConfig (or ArrayDataConfig) field to a fixed value")
    if any(data.get(k) for k in ARRAY_KEYS):  # an array file: its paths are read from the working folder
        reject_unknown(data, [f.name for f in dataclasses.fields(ArrayDataConfig)], f"{where}: data", "key")
        data = absolute_paths(data)
    else:
        reject_unknown(data, [f.name for f in dataclasses.fields(DataConfig)], f"{where}: data", "key")
    try:
        _ = make_data_config(data).spec  # an array file's header is read: a bad file is one line now
    except MMTuneError as exc:
        raise MMTuneError(f"{where}: data: {exc}") from None
    return dict(data)


def _parse_sweep(sweep: Any, where: str) -> dict[str, Any]:
    """The space's sweep section: its keys and the type of each value checked."""
    if not isinstance(sweep, dict):
        raise MMTuneError(f"{where}: sweep must be a mapping with some of {list(SWEEP_KEYS)}")
    reject_unknown(sweep, SWEEP_KEYS, f"{where}: sweep", "key")
    for key, value in sweep.items():
        if key == "time_budget":
            from mmtune.search.budget import parse_duration

            try:
                parse_duration(value)
            except MMTuneError as exc:
                raise MMTuneError(f"{where}: sweep.time_budget: {exc}".replace("--time-budget ", "")) from None
            continue
        number = key in ("reduction_factor", "final_share")
        if not is_number(value) or (not number and not isinstance(value, int)):
            raise MMTuneError(f"{where}: sweep.{key} must be {'a number' if number else 'an integer'}, "
                              f"got {value!r}")
        if key == "final_share" and not 0 <= value < 1:
            raise MMTuneError(f"{where}: sweep.final_share must be at least 0 and below 1, got {value!r}")
    return dict(sweep)


def _parse_model_choice(
    spec: Any, listed: list[str], where: str, known: list[str]
) -> tuple[tuple[str, ...], tuple[float, ...] | None]:
    """The model choices, and their weights when `model.weights` is given."""
    if spec is None:
        if not listed:
            raise MMTuneError(f"{where}: no model: give `model:` or a `models:` section (one of {known})")
        return tuple(listed), None
    weights = None
    if isinstance(spec, str):
        choices: Any = [spec]
    elif isinstance(spec, dict):
        reject_unknown(spec, ("type", "choices", "weights"), f"{where}: model", "key")
        if spec.get("type", "categorical") != "categorical":
            raise MMTuneError(f"{where}: model.type must be categorical, got {spec['type']!r}")
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise MMTuneError(f"{where}: model.choices must be a non-empty list of model names")
    else:
        raise MMTuneError(f"{where}: model must be a model name or {{choices: [...]}}, got {spec!r}")
    for name in choices:
        if name not in known:
            raise MMTuneError(f"{where}: model: unknown model {name!r}; expected one of {known}")
    if len(set(choices)) != len(choices):
        raise MMTuneError(f"{where}: model.choices has duplicates: {choices}")
    if isinstance(spec, dict) and "weights" in spec:
        w = spec["weights"]
        if (not isinstance(w, list) or len(w) != len(choices)
                or not all(is_number(x) and not isinstance(x, bool) and x > 0 for x in w)):
            raise MMTuneError(f"{where}: model.weights must be a list of {len(choices)} numbers > 0 "
                              f"(one per choice), got {w!r}")
        weights = tuple(float(x) for x in w)
    return tuple(choices), weights


def _parse_section(model: str, raw: Any, where: str) -> ModelSection:
    if not isinstance(raw, dict):
        raise MMTuneError(f"{where}: must be a mapping of parameter to spec, got {raw!r}")
    preset = raw.get("preset")
    if preset is not None and not isinstance(preset, str):
        raise MMTuneError(f"{where}.preset must be a preset name, got {preset!r}")
    fields = config_fields(model)
    model_params: dict[str, Param] = {}
    train_params: dict[str, Param] = {}
    for name, spec in raw.items():
        if name == "preset":
            continue
        if name in fields:
            model_params[name] = parse_param(spec, f"{where}.{name}")
        elif name in TRAIN_FIELDS:
            _check_train_field(name, f"{where}.{name}")
            train_params[name] = parse_param(spec, f"{where}.{name}")
        else:
            raise MMTuneError(
                f"{where}.{name}: unknown parameter; expected a {model} config field {fields} "
                f"or a training field {[f for f in TRAIN_FIELDS if f not in RESERVED_TRAIN]}"
            )
    return ModelSection(preset, model_params, train_params)


def _check_train_field(name: str, where: str) -> None:
    if name in RESERVED_TRAIN:
        raise MMTuneError(f"{where}: {name} is set by the sweep ({RESERVED_TRAIN[name]}), not by the space")
    if name not in TRAIN_FIELDS:
        raise MMTuneError(f"{where}: unknown training parameter; expected one of "
                          f"{[f for f in TRAIN_FIELDS if f not in RESERVED_TRAIN]}")


def _check_configs(space: SearchSpace) -> None:
    """Build each model's config at each parameter's candidate values (at most 64 a parameter, see
    `Param.candidates`) so that bad values fail before the sweep, in a time that does not grow with the space."""
    for model in space.models:
        section = space.sections[model]
        base: dict[str, Any] = {}
        for name, p in space.shared.items():
            base[name] = p.candidates()[0]
        for name, p in {**section.model_params, **section.train_params}.items():
            base[f"{model}.{name}"] = p.candidates()[0]
        _try(space, model, base, f"models.{model}")
        params = [(name, name, p, "shared") for name, p in space.shared.items()]
        params += [(f"{model}.{n}", n, p, f"models.{model}") for n, p in
                   {**section.model_params, **section.train_params}.items()]
        for key, name, p, where in params:
            for value in p.candidates():
                if name == "flow" and isinstance(value, str):
                    try:
                        data = make_data_config(space.data)  # an array file takes farneback only
                        check_estimator(value, data if isinstance(data, ArrayDataConfig) else None)
                    except MMTuneError as exc:
                        raise MMTuneError(f"{space.path}: {where}.flow: {exc}") from None
                _try(space, model, {**base, key: value}, f"{where}.{name} = {value!r}")


def _try(space: SearchSpace, model: str, params: dict[str, Any], where: str) -> None:
    try:
        space.trial_config({MODEL_KEY: model, **params})
    except MMTuneError as exc:
        raise MMTuneError(f"{space.path}: {where}: {exc}") from None
    except (TypeError, ValueError) as exc:  # a model config that checks with a plain ValueError
        raise MMTuneError(f"{space.path}: {where}: {exc}") from None
