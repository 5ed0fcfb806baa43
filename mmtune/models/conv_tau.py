"""TAU: SimVP with Temporal Attention Units (Tan et al., CVPR 2023), after OpenSTL's 'tau'.

A per-frame conv encoder shrinks each frame; the frames are stacked into channels and a
stack of TAU blocks (large-kernel static attention × squeeze-excitation dynamic gate, then
a conv MLP) translates the past into the future in one shot; a mirrored decoder with a skip
from the first encoder layer draws the frames. There is no recurrence, so it trains fast.

Where this differs from OpenSTL's `SimVP_Model(model_type="tau")`: the translator reduces
T·hid_S to hid_T with a plain 1×1 conv (OpenSTL runs its first TAU block at T·hid_S channels
before reducing), stochastic depth grows linearly from 0, the readout has one channel (the
frame) whatever `in_channels` is, and the output can optionally go through a sigmoid.

Example:
    >>> import torch
    >>> from mmtune.models import get_model, make_model_config
    >>> model = get_model("conv_tau", make_model_config("conv_tau", preset="small"))
    >>> model(torch.rand(2, 10, 1, 64, 64)).shape
    torch.Size([2, 10, 1, 64, 64])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from mmtune.errors import MMTuneError
from mmtune.models._layers import (
    ConvNormAct,
    DropPath,
    check_choice,
    check_common,
    check_fraction,
    check_input,
    check_int,
    check_positive,
)
from mmtune.models.registry import register_model

KERNEL_SIZES = (3, 5, 7)
OUTPUTS = ("linear", "sigmoid")


def max_n_s(height: int, width: int) -> int:
    """The deepest encoder a frame allows: every second layer halves H and W, so 2^(N_S/2) must divide
    both (64 = 2^6 allows N_S <= 12; 24 = 2^3 * 3 allows 6)."""
    both = math.gcd(height, width)
    return 2 * ((both & -both).bit_length() - 1)


MAX_N_S = max_n_s(64, 64)  # Moving MNIST's frames


@dataclass(frozen=True)
class ConvTAUConfig:
    """Tunable knobs of `conv_tau`; the defaults are OpenSTL's Moving-MNIST TAU.

    Args:
        hid_S: Channels of the spatial encoder/decoder.
        hid_T: Channels of the temporal translator.
        N_S: Encoder (and decoder) layers; even, every second one halves (doubles) H and W, so at
            most 12 for 64x64 frames (see `max_n_s`).
        N_T: TAU blocks in the translator.
        enc_kernel: Kernel of the encoder convs; one of 3, 5, 7.
        dec_kernel: Kernel of the decoder convs; one of 3, 5, 7.
        mlp_ratio: Hidden width of each block's MLP, as a multiple of hid_T.
        drop_path: Stochastic-depth rate of the last TAU block (linear from 0), in [0, 1).
        in_channels: Channels per input frame: out_channels (the frame) or out_channels + 2 (+ optical flow).
        output: "linear" (OpenSTL: the readout as it is, clamped to [0, 1] at evaluation) or
            "sigmoid" (squashed into (0, 1), which never reaches a black 0 and so leaves the
            background grey: val SSIM 0.075 against 0.37 for linear at the parity budget).
        t_in: Input frames.
        t_out: Predicted frames; must equal t_in (the translator maps frames to frames).
        out_channels: Channels of a frame (the data's; the prediction has them).
        height: Frame height (the data's).
        width: Frame width (the data's).
    """

    hid_S: int = 64
    hid_T: int = 512
    N_S: int = 4
    N_T: int = 8
    enc_kernel: int = 3
    dec_kernel: int = 3
    mlp_ratio: float = 8.0
    drop_path: float = 0.0
    in_channels: int = 1
    output: str = "linear"
    t_in: int = 10
    t_out: int = 10
    out_channels: int = 1
    height: int = 64
    width: int = 64

    def __post_init__(self) -> None:
        check_int("hid_S", self.hid_S)
        check_choice("output", self.output, OUTPUTS)
        check_int("hid_T", self.hid_T)
        if (
            isinstance(self.N_S, bool)
            or not isinstance(self.N_S, int)
            or self.N_S < 2
            or self.N_S % 2
        ):
            raise MMTuneError(f"N_S must be an even number ≥ 2, got {self.N_S!r}")
        check_int("height", self.height)
        check_int("width", self.width)
        deepest = max_n_s(self.height, self.width)
        if self.N_S > deepest:  # found now, not at the first batch
            raise MMTuneError(f"N_S must be at most {deepest} for {self.height}x{self.width} frames "
                              f"(each second layer halves H and W), got {self.N_S!r}")
        check_int("N_T", self.N_T)
        check_choice("enc_kernel", self.enc_kernel, KERNEL_SIZES)
        check_choice("dec_kernel", self.dec_kernel, KERNEL_SIZES)
        check_positive("mlp_ratio", self.mlp_ratio)
        check_fraction("drop_path", self.drop_path)
        check_common(self.in_channels, self.t_in, self.t_out, "conv_tau", self.out_channels, flow=True)
        if self.t_out != self.t_in:
            raise MMTuneError(f"t_out must equal t_in ({self.t_in}) for conv_tau, got {self.t_out}")


# ---------------------------------------------------------------------------------------------
# Spatial encoder and decoder.


class Encoder(nn.Module):
    """N_S ConvNormAct layers, strides 1, 2, 1, 2, ...; also returns the first layer's output."""

    def __init__(self, c_in: int, hid: int, n_layers: int, kernel_size: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            ConvNormAct(c_in if i == 0 else hid, hid, kernel_size, stride=1 + i % 2)
            for i in range(n_layers)
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # (N, c_in, H, W) -> latent (N, hid, H / 2^(N_S/2), W / 2^(N_S/2)), skip (N, hid, H, W)
        skip = x = self.layers[0](x)
        for layer in self.layers[1:]:
            x = layer(x)
        return x, skip


class Decoder(nn.Module):
    """Mirror of the encoder (PixelShuffle upsampling on layers 0, 2, ...) and a 1×1 readout."""

    def __init__(self, hid: int, c_out: int, n_layers: int, kernel_size: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            ConvNormAct(hid, hid, kernel_size, upsample=i % 2 == 0) for i in range(n_layers)
        )
        self.readout = nn.Conv2d(hid, c_out, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        # (N, hid, h, w), skip (N, hid, H, W) -> (N, c_out, H, W)
        for layer in self.layers[:-1]:
            x = layer(x)
        return self.readout(self.layers[-1](x + skip))


# ---------------------------------------------------------------------------------------------
# Temporal translator.


class TemporalAttentionModule(nn.Module):
    """Static attention (dw 5×5 → dw 7×7 dilation 3 → 1×1) × dynamic SE gate × the input."""

    def __init__(self, dim: int, reduction: int = 16) -> None:
        super().__init__()
        # OpenSTL's kernel_size=21, dilation=3 decomposition: 5×5, then 7×7 dilated by 3
        self.conv0 = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.conv_spatial = nn.Conv2d(dim, dim, 7, padding=9, dilation=3, groups=dim)
        self.conv1 = nn.Conv2d(dim, dim, 1)
        squeeze = max(dim // max(dim // reduction, 4), 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Linear(dim, squeeze, bias=False),
            nn.ReLU(),
            nn.Linear(squeeze, dim, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, dim, h, w) -> (B, dim, h, w)
        static = self.conv1(self.conv_spatial(self.conv0(x)))  # (B, dim, h, w)
        dynamic = self.fc(self.pool(x).flatten(1))[:, :, None, None]  # (B, dim, 1, 1)
        return dynamic * static * x


class TemporalAttention(nn.Module):
    """1×1 value projection + GELU → temporal attention module → 1×1, plus a shortcut."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj_1 = nn.Conv2d(dim, dim, 1)
        self.act = nn.GELU()
        self.attn = TemporalAttentionModule(dim)
        self.proj_2 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, dim, h, w) -> (B, dim, h, w)
        return x + self.proj_2(self.attn(self.act(self.proj_1(x))))


class MixMLP(nn.Module):
    """1×1 → depth-wise 3×3 → GELU → 1×1: an MLP that also mixes neighbouring pixels."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, dim, h, w) -> (B, dim, h, w)
        return self.fc2(self.act(self.dwconv(self.fc1(x))))


class TAUBlock(nn.Module):
    """BN → temporal attention and BN → MLP, each a layer-scaled residual with stochastic depth."""

    def __init__(self, dim: int, mlp_ratio: float, drop_path: float, init_value: float = 1e-2):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = TemporalAttention(dim)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = MixMLP(dim, max(int(dim * mlp_ratio), 1))
        self.drop_path = DropPath(drop_path)
        # small layer scales keep each block close to the identity at the start of training
        self.scale1 = nn.Parameter(torch.full((dim,), init_value))
        self.scale2 = nn.Parameter(torch.full((dim,), init_value))
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, dim, h, w) -> (B, dim, h, w)
        x = x + self.drop_path(self.scale1[:, None, None] * self.attn(self.norm1(x)))
        return x + self.drop_path(self.scale2[:, None, None] * self.mlp(self.norm2(x)))


def _init_weights(m: nn.Module) -> None:
    """OpenSTL's init for TAU blocks: truncated normal linears, fan-out normal convs."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            nn.init.zeros_(m.bias)


class Translator(nn.Module):
    """1×1 reduction T·hid_S → hid_T, N_T TAU blocks, 1×1 back to T·hid_S."""

    def __init__(self, c_in: int, hid: int, n_blocks: int, mlp_ratio: float, drop_path: float):
        super().__init__()
        rates = torch.linspace(0, drop_path, n_blocks, device="cpu").tolist()  # cpu: also under a meta device
        self.reduce = nn.Conv2d(c_in, hid, 1)
        self.blocks = nn.Sequential(*(TAUBlock(hid, mlp_ratio, r) for r in rates))
        self.expand = nn.Conv2d(hid, c_in, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, T*hid_S, h, w) -> (B, T*hid_S, h, w)
        return self.expand(self.blocks(self.reduce(x)))


# ---------------------------------------------------------------------------------------------
# The model.


class ConvTAU(nn.Module):
    """SimVP encoder → TAU translator over frames stacked in channels → decoder.

    The output is linear (`output="linear"`, as OpenSTL's; evaluation clamps it to [0, 1]) or
    a sigmoid. With `in_channels = out_channels + 2` the input carries two optical-flow channels
    after the frame; the prediction is the frame only.
    """

    def __init__(self, cfg: ConvTAUConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg.in_channels, cfg.hid_S, cfg.N_S, cfg.enc_kernel)
        self.translator = Translator(
            cfg.t_in * cfg.hid_S, cfg.hid_T, cfg.N_T, cfg.mlp_ratio, cfg.drop_path
        )
        self.decoder = Decoder(cfg.hid_S, cfg.out_channels, cfg.N_S, cfg.dec_kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predict (B, t_out, out_channels, H, W) from x of shape (B, t_in, in_channels, H, W)."""
        check_input(x, self.cfg.t_in, self.cfg.in_channels, 2 ** (self.cfg.N_S // 2), "conv_tau")
        b, t, c, height, width = x.shape
        z, skip = self.encoder(x.reshape(b * t, c, height, width))  # (B*T, hid_S, h, w)
        hid = self.translator(z.reshape(b, -1, *z.shape[2:]))  # (B, T*hid_S, h, w)
        y = self.decoder(hid.reshape(z.shape), skip)  # (B*T, out_channels, H, W)
        if self.cfg.output == "sigmoid":
            y = torch.sigmoid(y)
        return y.view(b, t, self.cfg.out_channels, height, width)


@register_model(
    "conv_tau",
    ConvTAUConfig,
    presets={
        "seed2023": {
            "model": {
                "hid_S": 32,
                "hid_T": 128,
                "N_S": 4,
                "N_T": 8,
                "enc_kernel": 3,
                "dec_kernel": 5,
            },
            "train": {"lr": 0.01, "weight_decay": 0.05, "kl_weight": 0.5, "batch_size": 16},
        },
        "small": {"model": {"hid_S": 16, "hid_T": 32, "N_S": 2, "N_T": 2}, "train": {}},
        # OpenSTL's Moving-MNIST TAU (today also the default config): `mmtune bench`'s openstl size
        "openstl": {"model": {"hid_S": 64, "hid_T": 512, "N_S": 4, "N_T": 8}, "train": {}},
    },
    kl_weight=0.1,  # TAU's loss carries the differential divergence by default (OpenSTL: 0.1)
    takes_flow=True,
    channels_last=True,
)
def build_conv_tau(cfg: ConvTAUConfig) -> ConvTAU:
    """Build the TAU model from its config."""
    return ConvTAU(cfg)
