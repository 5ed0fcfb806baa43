"""A toy video predictor as an mmtune model plugin: the input frames stacked as channels, two convs.

Importing this module registers the model `toy` (its entry point in the group `mmtune.models`
names this module). It keeps to mmtune's model contract, which the parametrized model tests
check on every registered model: a frozen dataclass config with `in_channels`, `t_in` and
`t_out` beside its knobs, bad values raising `MMTuneError` naming the field, a `small` preset,
an input check, outputs (B, t_out, 1, H, W) in [0, 1], and the config on `model.cfg`.

Example:
    >>> import torch
    >>> from mmtune.models import get_model, make_model_config
    >>> model = get_model("toy", make_model_config("toy", preset="small"))
    >>> model(torch.rand(2, 10, 1, 64, 64)).shape
    torch.Size([2, 10, 1, 64, 64])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mmtune.errors import MMTuneError
from mmtune.models import register_model

KERNEL_SIZES = (3, 5)


def _positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise MMTuneError(f"{name} must be an integer >= 1, got {value!r}")


@dataclass(frozen=True)
class ToyConfig:
    """Tunable knobs of `toy`.

    Args:
        hidden: Channels between the two convs.
        kernel_size: Kernel of both convs; 3 or 5.
        in_channels: Channels per input frame; only 1 (the frame, no optical flow).
        t_in: Input frames.
        t_out: Predicted frames.
    """

    hidden: int = 16
    kernel_size: int = 3
    in_channels: int = 1
    t_in: int = 10
    t_out: int = 10

    def __post_init__(self) -> None:
        for name in ("hidden", "t_in", "t_out"):
            _positive_int(name, getattr(self, name))
        if isinstance(self.kernel_size, bool) or self.kernel_size not in KERNEL_SIZES:
            raise MMTuneError(f"kernel_size must be one of {KERNEL_SIZES}, got {self.kernel_size!r}")
        if isinstance(self.in_channels, bool) or self.in_channels != 1:
            raise MMTuneError(f"in_channels must be 1 (toy takes no flow channels), got {self.in_channels!r}")


class Toy(nn.Module):
    """(B, t_in, 1, H, W) -> t_in channels -> conv -> ReLU -> conv -> sigmoid -> (B, t_out, 1, H, W)."""

    def __init__(self, cfg: ToyConfig) -> None:
        super().__init__()
        self.cfg = cfg
        pad = cfg.kernel_size // 2
        self.conv1 = nn.Conv2d(cfg.t_in, cfg.hidden, cfg.kernel_size, padding=pad)
        self.conv2 = nn.Conv2d(cfg.hidden, cfg.t_out, cfg.kernel_size, padding=pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predict (B, t_out, 1, H, W) from x of shape (B, t_in, 1, H, W)."""
        if x.dim() != 5 or x.shape[1] != self.cfg.t_in or x.shape[2] != self.cfg.in_channels:
            raise MMTuneError(f"toy expects input (B, {self.cfg.t_in}, {self.cfg.in_channels}, H, W), "
                              f"got {tuple(x.shape)}")
        h = torch.relu(self.conv1(x.flatten(1, 2)))  # (B, hidden, H, W)
        return torch.sigmoid(self.conv2(h)).unsqueeze(2)  # (B, t_out, 1, H, W)


@register_model("toy", ToyConfig, presets={"small": {"model": {"hidden": 8}, "train": {}}})
def build_toy(cfg: ToyConfig) -> Toy:
    """Build the toy model from its config."""
    return Toy(cfg)
