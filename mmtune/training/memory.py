"""Will a config fit? Its peak training memory, estimated without allocating it, against what a trial has.

The model is built on the meta device (shapes only, no storage), so a config of 10^12 parameters
costs nothing to estimate. Peak = parameters x 16 bytes (fp32 weights, gradients and AdamW's two
moments) + the activations autograd saves for the backward pass, measured by one forward pass
on meta tensors at the batch size. A trial has its CPUs' share of the machine's RAM, or its share
of a GPU's memory. Configs over `FIT_SHARE` of that are refused before they start: a sweep marks
the trial infeasible, `mmtune train` says so in one line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mmtune.training.config import TrialConfig

BYTES_PER_PARAM = 16  # fp32 weights + gradients + AdamW's exp_avg and exp_avg_sq
FIT_SHARE = 0.9  # refuse a config whose estimate is over this share of the memory a trial has
GIB = 2**30


@dataclass(frozen=True)
class MemoryEstimate:
    """A config's estimated peak training memory, in bytes, and its parts."""

    params: int  # parameter count
    param_bytes: int  # weights, gradients and optimizer state
    activation_bytes: int | None  # saved for backward at the batch size; None when the meta pass failed

    @property
    def total(self) -> int:
        """Bytes in all (parameters only when the activations could not be measured)."""
        return self.param_bytes + (self.activation_bytes or 0)


def estimate(trial: TrialConfig) -> MemoryEstimate:
    """`trial`'s peak training memory, from a meta-device model and one meta forward pass."""
    import torch

    from mmtune.models.registry import get_model

    with torch.device("meta"):
        model = get_model(trial.model, trial.model_cfg)
    n = sum(p.numel() for p in model.parameters())
    return MemoryEstimate(n, n * BYTES_PER_PARAM, _saved_bytes(model, trial))


def _saved_bytes(model, trial: TrialConfig) -> int | None:
    """Bytes of the tensors autograd saves in one training forward pass, on the meta device."""
    import torch

    cfg = trial.model_cfg
    spec = trial.spec  # the data's frames (the model's in_channels may add flow channels)
    shape = (trial.train.batch_size, spec.t_in, int(getattr(cfg, "in_channels", spec.channels)), spec.height, spec.width)
    saved = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += t.numel() * t.element_size()
        return t

    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model.train()
            model(torch.zeros(shape, device="meta"))
    except Exception:  # an op without a meta kernel: the estimate keeps the parameters only
        return None
    return saved


def trial_memory_bytes(cpus: float, gpus: float) -> int:
    """The memory one trial has: its share of a GPU's memory when it has GPUs, else its CPUs' share
    of this machine's RAM."""
    if gpus > 0:
        import torch

        return int(torch.cuda.get_device_properties(0).total_memory * min(1.0, gpus))
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return int(total * min(1.0, cpus / (os.cpu_count() or 1)))


def does_not_fit(trial: TrialConfig, cpus: float, gpus: float = 0.0) -> str | None:
    """Why `trial` cannot train in the memory a trial of `cpus` CPUs and `gpus` GPUs has, or None."""
    need, have = estimate(trial), trial_memory_bytes(cpus, gpus)
    if need.total <= FIT_SHARE * have:
        return None
    where = f"{gpus:g} GPU(s)" if gpus > 0 else f"{cpus:g} of {os.cpu_count()} CPU(s)' share of RAM"
    return (f"{trial.model} needs about {need.total / GIB:,.1f} GiB to train ({need.params:,} parameters"
            + (f", {need.activation_bytes / GIB:,.1f} GiB of activations at batch {trial.train.batch_size}"
               if need.activation_bytes is not None else "")
            + f"), more than the {have / GIB:,.1f} GiB a trial has ({where})")
