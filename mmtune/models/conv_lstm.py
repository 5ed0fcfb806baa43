"""A ConvLSTM encoder-decoder (Shi et al., NeurIPS 2015) with a U-Net-style skip.

Two convs bring the frame to 32 px, two ConvLSTM cells read the input frames, two more
(seeded with the encoder's states) unroll the future, and two deconvs bring each future
state back to a 64 px frame. With `skip`, the conv features of the last input frame join the
deconvs, so the recurrent path only has to carry motion, not appearance.

Example:
    >>> import torch
    >>> from mmtune.models import get_model, make_model_config
    >>> model = get_model("conv_lstm", make_model_config("conv_lstm", preset="small"))
    >>> model(torch.rand(2, 10, 1, 64, 64)).shape
    torch.Size([2, 10, 1, 64, 64])
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from mmtune.models._layers import (
    ConvNormAct,
    check_choice,
    check_common,
    check_divides,
    check_input,
    check_int,
    num_groups,
)
from mmtune.models.registry import register_model

KERNEL_SIZES = (3, 5, 7)
_LeakyReLU = partial(nn.LeakyReLU, 0.2)

State = tuple[torch.Tensor, torch.Tensor]  # (h, c), each (B, hidden, H, W)


@dataclass(frozen=True)
class ConvLSTMConfig:
    """Tunable knobs of `conv_lstm`.

    Args:
        n_f: Channels of the conv (and deconv) features.
        hidden: Hidden channels of each ConvLSTM cell.
        kernel_size: Kernel of the ConvLSTM cells' convolutions; one of 3, 5, 7.
        skip: Feed the last input frame's conv features to the deconvs.
        in_channels: Channels per input frame; only out_channels (the frame, no optical flow).
        t_in: Input frames.
        t_out: Predicted frames.
        out_channels: Channels of a frame (the data's; the prediction has them).
        height: Frame height (the data's); even, the cells run at half size.
        width: Frame width (the data's); even.
    """

    n_f: int = 32
    hidden: int = 64
    kernel_size: int = 5
    skip: bool = True
    in_channels: int = 1
    t_in: int = 10
    t_out: int = 10
    out_channels: int = 1
    height: int = 64
    width: int = 64

    def __post_init__(self) -> None:
        check_int("n_f", self.n_f)
        check_int("hidden", self.hidden)
        check_choice("kernel_size", self.kernel_size, KERNEL_SIZES)
        check_choice("skip", self.skip, (True, False))
        check_common(self.in_channels, self.t_in, self.t_out, "conv_lstm", self.out_channels)
        check_int("height", self.height)
        check_int("width", self.width)
        check_divides("conv_lstm", self.height, self.width, 2, "the ConvLSTM cells run at half size")


class ConvLSTMCell(nn.Module):
    """One ConvLSTM step: the four gates come from one conv over [input, h]."""

    def __init__(self, c_in: int, hidden: int, kernel_size: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.gates = nn.Conv2d(c_in + hidden, 4 * hidden, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor, state: State | None) -> State:
        # x: (B, c_in, H, W) -> h, c: (B, hidden, H, W)
        if state is None:
            zeros = x.new_zeros(x.shape[0], self.hidden, *x.shape[2:])
            state = (zeros, zeros)
        h, c = state
        i, f, o, g = self.gates(torch.cat([x, h], dim=1)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


class ConvLSTM(nn.Module):
    """Conv encoder → 2 encoder + 2 decoder ConvLSTM cells at 32 px → deconv decoder.

    The decoder cells start from the encoder cells' final states; at each step the lower
    decoder cell reads the previous top hidden state (the encoder's at the first step). The
    output goes through a sigmoid, so pixels lie in [0, 1].
    """

    def __init__(self, cfg: ConvLSTMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        n_f, hid, k = cfg.n_f, cfg.hidden, cfg.kernel_size
        self.conv1 = ConvNormAct(cfg.in_channels, n_f, 3, stride=2, groups=4, act=_LeakyReLU)
        self.conv2 = ConvNormAct(n_f, n_f, 3, stride=1, groups=4, act=_LeakyReLU)
        self.enc1 = ConvLSTMCell(n_f, hid, k)
        self.enc2 = ConvLSTMCell(hid, hid, k)
        self.dec1 = ConvLSTMCell(hid, hid, k)
        self.dec2 = ConvLSTMCell(hid, hid, k)
        extra = n_f if cfg.skip else 0
        self.deconv1 = nn.Sequential(
            nn.ConvTranspose2d(hid + extra, n_f, 3, stride=1, padding=1, bias=False),
            nn.GroupNorm(num_groups(n_f, 4), n_f),
            _LeakyReLU(),
        )
        self.deconv2 = nn.ConvTranspose2d(n_f + extra, cfg.out_channels, 4, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predict (B, t_out, out_channels, H, W) from x of shape (B, t_in, in_channels, H, W)."""
        check_input(x, self.cfg.t_in, self.cfg.in_channels, 2, "conv_lstm")
        b, t, c, height, width = x.shape
        f1 = self.conv1(x.reshape(b * t, c, height, width))  # (B*t_in, n_f, H/2, W/2)
        f2 = self.conv2(f1)  # (B*t_in, n_f, H/2, W/2)
        feats = f2.view(b, t, *f2.shape[1:])  # (B, t_in, n_f, H/2, W/2)

        s1: State | None = None
        s2: State | None = None
        for step in range(t):
            s1 = self.enc1(feats[:, step], s1)
            s2 = self.enc2(s1[0], s2)
        assert s1 is not None and s2 is not None  # t_in ≥ 1 is validated by the config

        hs = []
        top = s2[0]  # (B, hidden, H/2, W/2)
        for _ in range(self.cfg.t_out):
            s1 = self.dec1(top, s1)
            s2 = self.dec2(s1[0], s2)
            top = s2[0]
            hs.append(top)
        n = self.cfg.t_out
        y = torch.stack(hs, dim=1).flatten(0, 1)  # (B*t_out, hidden, H/2, W/2)

        if self.cfg.skip:
            # the last input frame's features, repeated for every predicted frame
            last1 = f1.view(b, t, *f1.shape[1:])[:, -1]  # (B, n_f, H/2, W/2)
            last2 = feats[:, -1]  # (B, n_f, H/2, W/2)
            y = torch.cat([y, _repeat(last2, n)], dim=1)  # (B*t_out, hidden + n_f, H/2, W/2)
            y = self.deconv1(y)  # (B*t_out, n_f, H/2, W/2)
            y = torch.cat([y, _repeat(last1, n)], dim=1)  # (B*t_out, 2 n_f, H/2, W/2)
        else:
            y = self.deconv1(y)  # (B*t_out, n_f, H/2, W/2)
        y = torch.sigmoid(self.deconv2(y))  # (B*t_out, out_channels, H, W)
        return y.view(b, n, self.cfg.out_channels, height, width)


def _repeat(f: torch.Tensor, n: int) -> torch.Tensor:
    """(B, C, H, W) -> (B*n, C, H, W), each sample repeated n times in a row."""
    return f.unsqueeze(1).expand(-1, n, -1, -1, -1).flatten(0, 1)


@register_model(
    "conv_lstm",
    ConvLSTMConfig,
    presets={"small": {"model": {"n_f": 8, "hidden": 16, "kernel_size": 3}, "train": {}}},
    channels_last=True,
)
def build_conv_lstm(cfg: ConvLSTMConfig) -> ConvLSTM:
    """Build the ConvLSTM encoder-decoder from its config."""
    return ConvLSTM(cfg)
