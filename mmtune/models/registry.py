"""One registry for models: a name maps to a typed config class and a builder.

Example:
    >>> from mmtune.models import get_model, make_model_config
    >>> cfg = make_model_config("conv_tau", preset="seed2023")
    >>> model = get_model("conv_tau", cfg)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from mmtune.errors import MMTuneError


@dataclass(frozen=True)
class ModelEntry:
    """What the registry knows about one model."""

    name: str
    config_cls: type
    builder: Callable[[Any], nn.Module]
    presets: dict[str, dict[str, Any]]


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str, config_cls: type, presets: dict[str, dict[str, Any]] | None = None
) -> Callable[[Callable[[Any], nn.Module]], Callable[[Any], nn.Module]]:
    """Register `builder(cfg) -> nn.Module` under `name`; a duplicate name raises."""

    def wrap(builder: Callable[[Any], nn.Module]) -> Callable[[Any], nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        if not dataclasses.is_dataclass(config_cls):
            raise TypeError(f"config class of {name!r} must be a dataclass")
        _REGISTRY[name] = ModelEntry(name, config_cls, builder, dict(presets or {}))
        return builder

    return wrap


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_REGISTRY)


def get_entry(name: str) -> ModelEntry:
    """The registry entry of `name`, or an MMTuneError naming the known models."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise MMTuneError(f"unknown model {name!r}; expected one of {list_models()}") from None


def config_fields(name: str) -> list[str]:
    """The tunable field names of a model's config."""
    return [f.name for f in dataclasses.fields(get_entry(name).config_cls)]


def make_model_config(name: str, preset: str | None = None, **overrides: Any) -> Any:
    """Build a model's typed config from an optional preset plus overrides; unknown keys raise."""
    entry = get_entry(name)
    values: dict[str, Any] = {}
    if preset is not None:
        if preset not in entry.presets:
            raise MMTuneError(
                f"unknown preset {preset!r} for model {name!r}; expected one of {sorted(entry.presets)}"
            )
        values.update(entry.presets[preset].get("model", {}))
    values.update(overrides)
    known = set(config_fields(name))
    unknown = sorted(set(values) - known)
    if unknown:
        raise MMTuneError(
            f"unknown {name} config key(s) {unknown}; expected some of {sorted(known)}"
        )
    return entry.config_cls(**values)


def preset_train_overrides(name: str, preset: str | None) -> dict[str, Any]:
    """The training settings (lr, batch size, ...) a preset carries besides the model's."""
    if preset is None:
        return {}
    entry = get_entry(name)
    if preset not in entry.presets:
        raise MMTuneError(f"unknown preset {preset!r} for model {name!r}; expected one of {sorted(entry.presets)}")
    return dict(entry.presets[preset].get("train", {}))


def get_model(name: str, cfg: Any | None = None) -> nn.Module:
    """Build model `name` from its config (the defaults when `cfg` is None)."""
    entry = get_entry(name)
    if cfg is None:
        cfg = entry.config_cls()
    if not isinstance(cfg, entry.config_cls):
        raise TypeError(f"{name} expects a {entry.config_cls.__name__}, got {type(cfg).__name__}")
    return entry.builder(cfg)
