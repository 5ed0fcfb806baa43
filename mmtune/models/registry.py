"""One registry for models: a name maps to a typed config class and a builder.

The built-in models register themselves when `mmtune.models` imports them. Models from other
packages are plugins: a package declares an entry point in the group `mmtune.models` (see
`ENTRY_POINT_GROUP`) naming a module, or a callable, that calls `register_model`. The plugins
are loaded once, on the first `list_models()` or `get_entry()` (so also `get_model`,
`make_model_config`, ...), not when `mmtune.models` is imported: a plugin imports mmtune itself.
A plugin that fails to load is one warning line on stderr naming its package; the other models
keep working.

Example:
    >>> from mmtune.models import get_model, make_model_config
    >>> cfg = make_model_config("conv_tau", preset="seed2023")
    >>> model = get_model("conv_tau", cfg)
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from mmtune.errors import MMTuneError


@dataclass(frozen=True)
class ModelEntry:
    """What the registry knows about one model: how to build it, and the traits the loop asks about.

    Args:
        name: the registry name.
        config_cls: its frozen dataclass config; the fields are the tunable knobs.
        builder: `builder(cfg) -> nn.Module`.
        presets: named settings, each `{"model": {...config fields}, "train": {...TrainConfig fields}}`.
        kl_weight: the weight of the loss's differential-divergence (KL) term when the train config
            leaves it open (`TrainConfig.kl_weight = None`).
        takes_flow: the config's `in_channels` accepts 3 (the frame + 2 optical-flow channels), so
            a run with a flow estimator can train it.
        channels_last: its convolutions run faster with NHWC weights and activations; applied by the
            fast path on CUDA only (see `mmtune.training.loop.prepare_model`).
        cuda_fast: the fast path (bf16 autocast, torch.compile) pays on CUDA. False: the model trains
            fp32 eager on CUDA even with `TrainConfig.fast` (see `mmtune.training.loop.fast_path`).
    """

    name: str
    config_cls: type
    builder: Callable[[Any], nn.Module]
    presets: dict[str, dict[str, Any]]
    kl_weight: float = 0.0
    takes_flow: bool = False
    channels_last: bool = False
    cuda_fast: bool = True


_REGISTRY: dict[str, ModelEntry] = {}
ENTRY_POINT_GROUP = "mmtune.models"
_plugins_loaded = False


def register_model(
    name: str,
    config_cls: type,
    presets: dict[str, dict[str, Any]] | None = None,
    *,
    kl_weight: float = 0.0,
    takes_flow: bool = False,
    channels_last: bool = False,
    cuda_fast: bool = True,
) -> Callable[[Callable[[Any], nn.Module]], Callable[[Any], nn.Module]]:
    """Register `builder(cfg) -> nn.Module` under `name` with its traits (see `ModelEntry`).

    A duplicate name raises ValueError.

    Example:
        >>> @register_model("my_model", MyConfig, presets={"small": {"model": {}, "train": {}}})  # doctest: +SKIP
        ... def build_my_model(cfg: MyConfig) -> nn.Module:
        ...     return MyModel(cfg)
    """

    def wrap(builder: Callable[[Any], nn.Module]) -> Callable[[Any], nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        if not dataclasses.is_dataclass(config_cls):
            raise TypeError(f"config class of {name!r} must be a dataclass")
        if not (isinstance(kl_weight, (int, float)) and kl_weight >= 0):
            raise ValueError(f"kl_weight of {name!r} must be a number >= 0, got {kl_weight!r}")
        _REGISTRY[name] = ModelEntry(
            name, config_cls, builder, dict(presets or {}), float(kl_weight), bool(takes_flow), bool(channels_last),
            bool(cuda_fast),
        )
        return builder

    return wrap


def load_plugins() -> None:
    """Load the model plugins (entry points in `ENTRY_POINT_GROUP`) the first time it is called.

    An entry point names a module (registering on import) or a callable (called with no
    arguments, registering when called; a registered builder itself is not called again). One
    that raises is skipped with one line on stderr naming its package.
    """
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True  # first, so that a plugin that lists the models does not recurse
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            builders = [e.builder for e in _REGISTRY.values()]
            if callable(obj) and not isinstance(obj, types.ModuleType) and obj not in builders:
                obj()
        except Exception as exc:  # a broken plugin must not take the built-in models down with it
            package = ep.dist.name if ep.dist is not None else ep.value.split(":")[0]
            reason = (str(exc).strip().splitlines() or [""])[0][:200]
            print(f"mmtune: warning: model plugin package {package!r} (entry point {ep.name} = {ep.value}) "
                  f"failed to load and is skipped: {type(exc).__name__}: {reason}", file=sys.stderr)


def list_models() -> list[str]:
    """Names of all registered models (built-in and plugins), sorted."""
    load_plugins()
    return sorted(_REGISTRY)


def flow_models() -> list[str]:
    """Names of the registered models that take optical-flow channels (`ModelEntry.takes_flow`)."""
    return [n for n in list_models() if _REGISTRY[n].takes_flow]


def get_entry(name: str) -> ModelEntry:
    """The registry entry of `name`, or an MMTuneError naming the known models."""
    load_plugins()
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
