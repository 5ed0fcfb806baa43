"""Typed configs of one training run: what to train (model), how (train), on what (data)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from mmtune.data.arrays import ArrayDataConfig
from mmtune.data.datasets import DataConfig, make_data_config
from mmtune.data.spec import ClipSpec
from mmtune.errors import MMTuneError
from mmtune.models import flow_models, get_entry, make_model_config, preset_train_overrides

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULERS = ("onecycle", "cosine", "constant")
DEVICES = ("auto", "cpu", "cuda")
EVAL_BATCH = {"cpu": 8, "cuda": 64}  # TrainConfig.eval_batch_size None: clips per evaluation pass, by device type


@dataclass(frozen=True)
class TrainConfig:
    """How one model is trained. Defaults: AdamW + OneCycle, lr 1e-3, 5 epochs, batch 16."""

    epochs: int = 5
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adamw"
    scheduler: str = "onecycle"
    kl_weight: float | None = None  # None: the model's default (its registry entry's kl_weight)
    grad_clip: float | None = 1.0
    seed: int = 0
    device: str = "auto"
    fast: bool = True  # bf16 autocast (CUDA, and CPUs with AVX512-BF16/AMX) + the GPU speed-ups
    flow: str = "none"  # optical-flow channels (models that take flow): one of mmtune.flow.FLOW_ESTIMATORS
    # Clips per validation/test forward pass. None: EVAL_BATCH[device type], 8 on a CPU (where a
    # larger batch is slower per clip: conv_tau small on one thread validates 128 clips in 3.3 s at 8,
    # 8.4 s at 64; scripts/eval_batch.py) and 64 on a GPU.
    eval_batch_size: int | None = None
    # Train for this many wall seconds, validation included: the lr schedule follows the share of it
    # that has passed (not the step count), `epochs` is only an upper bound, and the last epoch
    # stops part-way when the time is up. None: train `epochs` epochs.
    time_budget_s: float | None = None

    def __post_init__(self) -> None:
        _positive_int(self, "epochs", "batch_size")
        if self.eval_batch_size is not None:
            _positive_int(self, "eval_batch_size")
        if self.time_budget_s is not None and not (
                isinstance(self.time_budget_s, (int, float)) and math.isfinite(self.time_budget_s)
                and self.time_budget_s > 0):
            raise MMTuneError(f"time_budget_s must be a positive number of seconds or None, got {self.time_budget_s!r}")
        if not (isinstance(self.lr, (int, float)) and 0 < self.lr):
            raise MMTuneError(f"lr must be a positive number, got {self.lr!r}")
        if self.weight_decay < 0:
            raise MMTuneError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.kl_weight is not None and self.kl_weight < 0:
            raise MMTuneError(f"kl_weight must be >= 0, got {self.kl_weight}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise MMTuneError(f"grad_clip must be > 0 or None, got {self.grad_clip}")
        for name, allowed in (("optimizer", OPTIMIZERS), ("scheduler", SCHEDULERS), ("device", DEVICES)):
            if getattr(self, name) not in allowed:
                raise MMTuneError(f"{name} must be one of {list(allowed)}, got {getattr(self, name)!r}")

    def eval_batch(self, device_type: str) -> int:
        """Clips per validation/test forward pass on a device of `device_type` ("cpu", "cuda")."""
        return self.eval_batch_size or EVAL_BATCH.get(device_type, EVAL_BATCH["cuda"])


def _positive_int(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise MMTuneError(f"{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class TrialConfig:
    """Everything one training run needs; checkpoints carry it beside the weights."""

    model: str
    model_cfg: Any
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig | ArrayDataConfig = field(default_factory=DataConfig)

    @property
    def spec(self) -> ClipSpec:
        """The shape of the data's clips, which the model follows."""
        return self.data.spec

    @property
    def kl_weight(self) -> float:
        """The effective KL weight (the model's default when the train config leaves it open)."""
        if self.train.kl_weight is not None:
            return float(self.train.kl_weight)
        return get_entry(self.model).kl_weight

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON-able) of this config."""
        return {
            "model": self.model,
            "model_cfg": dataclasses.asdict(self.model_cfg),
            "train": dataclasses.asdict(self.train),
            "data": dataclasses.asdict(self.data),
        }


def _build(cls: type, values: dict[str, Any], what: str) -> Any:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise MMTuneError(f"unknown {what} config key(s) {unknown}; expected some of {sorted(known)}")
    return cls(**values)


def build_trial(
    model: str,
    preset: str | None = None,
    model_overrides: dict[str, Any] | None = None,
    train_overrides: dict[str, Any] | None = None,
    data_overrides: dict[str, Any] | None = None,
) -> TrialConfig:
    """Build a TrialConfig from a model name, an optional preset and per-section overrides.

    A preset sets both model fields and training fields (lr, batch size, ...); explicit
    overrides win. With a flow estimator, a model that takes flow (`ModelEntry.takes_flow`) gets
    its 2 extra input channels; any other model is refused. The data's clip spec (`data.spec`)
    sets the model's t_in, t_out, channels and, where it has them, frame size; a frame size the
    architecture cannot take is refused in one line (the model config's `check_frame(h, w)`).

    Example:
        >>> trial = build_trial("conv_tau", preset="seed2023", train_overrides={"epochs": 1})
    """
    entry = get_entry(model)
    train_values = {**preset_train_overrides(model, preset), **(train_overrides or {})}
    train = _build(TrainConfig, train_values, "train")
    model_values = dict(model_overrides or {})
    if train.flow != "none":
        if not entry.takes_flow:
            raise MMTuneError(f"flow is an option of {', '.join(flow_models()) or 'no registered model'}; "
                              f"model {model!r} takes no flow (use --flow none)")
    data = make_data_config(data_overrides or {})
    spec = data.spec
    model_values = _follow_spec(model, entry.config_cls, model_values, spec, extra_in=2 if train.flow != "none" else 0)
    model_cfg = make_model_config(model, preset=preset, **model_values)
    check_frame = getattr(model_cfg, "check_frame", None)
    if check_frame is not None:  # a size the architecture cannot take: one line naming the constraint
        check_frame(spec.height, spec.width)
    return TrialConfig(model, model_cfg, train, data)


# The model config fields that the data's clip spec sets (where a model has them).
SPEC_FIELDS = {"t_in": "t_in", "t_out": "t_out", "out_channels": "channels", "height": "height", "width": "width"}


def _follow_spec(model: str, config_cls: type, values: dict[str, Any], spec: ClipSpec, extra_in: int) -> dict[str, Any]:
    """`values` with the fields the data decides (frames, channels, frame size) set from `spec`.

    A model field set otherwise is refused in one line: the data, not the model, decides it.
    """
    fields = {f.name for f in dataclasses.fields(config_cls)}
    if spec.channels != 1 and "out_channels" not in fields:
        raise MMTuneError(f"model {model!r} predicts one channel (its config has no out_channels); "
                          f"the data has {spec.channels} ({spec.describe()})")
    wanted = {name: getattr(spec, attr) for name, attr in SPEC_FIELDS.items() if name in fields}
    if "in_channels" in fields:
        wanted["in_channels"] = spec.channels + extra_in
    out = dict(values)
    for name, value in wanted.items():
        if name in out and out[name] != value:
            raise MMTuneError(f"{model}: {name}={out[name]!r} does not fit the data ({spec.describe()}, "
                              f"so {name}={value}); the data decides it")
        out[name] = value
    return out
