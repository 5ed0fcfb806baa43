"""Models: one registry; each model module registers itself when imported here."""

from __future__ import annotations

from mmtune.models import conv_lstm, conv_tau, simple_lstm  # noqa: F401  (explicit registration)
from mmtune.models.registry import (
    config_fields,
    flow_models,
    get_entry,
    get_model,
    list_models,
    make_model_config,
    preset_train_overrides,
    register_model,
)

__all__ = [
    "config_fields",
    "flow_models",
    "get_entry",
    "get_model",
    "list_models",
    "make_model_config",
    "preset_train_overrides",
    "register_model",
]
