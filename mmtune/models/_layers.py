"""Blocks and checks shared by the model files: config validation, input checks, conv layers."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from mmtune.errors import MMTuneError

# ---------------------------------------------------------------------------------------------
# Config validation: each check names the field, the allowed values and what it got.


def check_int(name: str, value: object, minimum: int = 1) -> None:
    """Raise unless `value` is an int (not a bool) that is at least `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise MMTuneError(f"{name} must be an integer ≥ {minimum}, got {value!r}")


def check_choice(name: str, value: object, allowed: Sequence[object], why: str = "") -> None:
    """Raise unless `value` is one of `allowed`; `why` is appended to the message."""
    # True == 1 in Python, so match the bool-ness too: a bool is no kernel size, 1 is no flag
    if not any(a == value and isinstance(a, bool) == isinstance(value, bool) for a in allowed):
        if len(allowed) == 1:
            expected = f"must be {allowed[0]!r}"
        else:
            expected = "must be one of " + ", ".join(repr(a) for a in allowed)
        suffix = f" ({why})" if why else ""
        raise MMTuneError(f"{name} {expected}{suffix}, got {value!r}")


def check_fraction(name: str, value: object) -> None:
    """Raise unless `value` is a probability-like number in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise MMTuneError(f"{name} must be a number in [0, 1), got {value!r}")


def check_positive(name: str, value: object) -> None:
    """Raise unless `value` is a number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise MMTuneError(f"{name} must be a number > 0, got {value!r}")


def check_common(
    in_channels: object, t_in: object, t_out: object, model: str, out_channels: object = 1, flow: bool = False
) -> None:
    """Validate the fields every config carries: `in_channels`, `out_channels`, `t_in` and `t_out`.

    `in_channels` is the frame's `out_channels`, plus 2 optical-flow channels where the model takes `flow`.
    """
    check_int("out_channels", out_channels)
    assert isinstance(out_channels, int)
    allowed_in = (out_channels, out_channels + 2) if flow else (out_channels,)
    why = (f"the frame's {out_channels} channel(s), or those + 2 flow channels" if flow
           else f"{model} takes the frame's {out_channels} channel(s) only, no flow channels")
    check_choice("in_channels", in_channels, allowed_in, why=why)
    check_int("t_in", t_in)
    check_int("t_out", t_out)


def check_divides(model: str, height: int, width: int, multiple: int, why: str) -> None:
    """Raise unless `multiple` divides the frame's height and width (`why` names the architecture's reason)."""
    if height % multiple or width % multiple:
        raise MMTuneError(f"{model} needs H and W divisible by {multiple} ({why}), got {height}x{width}")


def check_input(x: torch.Tensor, t_in: int, in_channels: int, multiple: int, model: str) -> None:
    """Raise unless `x` is (B, t_in, in_channels, H, W) with H and W multiples of `multiple`."""
    if (
        x.dim() != 5
        or x.shape[1] != t_in
        or x.shape[2] != in_channels
        or x.shape[3] % multiple
        or x.shape[4] % multiple
    ):
        raise MMTuneError(
            f"{model} expects input (B, {t_in}, {in_channels}, H, W) with H and W multiples "
            f"of {multiple}, got {tuple(x.shape)}"
        )


# ---------------------------------------------------------------------------------------------
# Layers.


def num_groups(channels: int, max_groups: int) -> int:
    """The largest group count ≤ `max_groups` that divides `channels` (for GroupNorm)."""
    return next(g for g in range(min(max_groups, channels), 0, -1) if channels % g == 0)


class ConvNormAct(nn.Module):
    """Conv k×k (stride 1 or 2) → GroupNorm → activation; `upsample` doubles H, W (PixelShuffle)."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel_size: int,
        stride: int = 1,
        upsample: bool = False,
        groups: int = 2,
        act: Callable[[], nn.Module] = nn.SiLU,
    ) -> None:
        super().__init__()
        pad = kernel_size // 2
        if upsample:
            # conv to 4× channels, then rearrange them into a 2× larger image (no checkerboard)
            conv: nn.Module = nn.Sequential(
                nn.Conv2d(c_in, 4 * c_out, kernel_size, padding=pad, bias=False),
                nn.PixelShuffle(2),
            )
        else:
            conv = nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=pad, bias=False)
        self.conv = conv
        self.norm = nn.GroupNorm(num_groups(c_out, groups), c_out)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (N, c_in, H, W) -> (N, c_out, H', W')
        return self.act(self.norm(self.conv(x)))


class DropPath(nn.Module):
    """Stochastic depth: in training, zero a residual branch per sample with probability `p`."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep
