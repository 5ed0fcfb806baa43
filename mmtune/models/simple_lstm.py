"""A fully connected baseline: per-frame dense encoder → LSTM → dense decoder, rolled out.

The frame is flattened, so the model knows nothing about space; it is the floor the
convolutional models should beat.

Example:
    >>> import torch
    >>> from mmtune.models import get_model, make_model_config
    >>> model = get_model("simple_lstm", make_model_config("simple_lstm", preset="small"))
    >>> model(torch.rand(2, 10, 1, 64, 64)).shape
    torch.Size([2, 10, 1, 64, 64])
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from mmtune.errors import MMTuneError
from mmtune.models._layers import check_common, check_fraction, check_input, check_int
from mmtune.models.registry import register_model


@dataclass(frozen=True)
class SimpleLSTMConfig:
    """Tunable knobs of `simple_lstm`.

    Args:
        dense1: Width of the first dense layer of the frame encoder (and last of the decoder).
        dense2: Width of the second dense layer; the LSTM's input size.
        hidden: LSTM hidden size.
        num_layers: Stacked LSTM layers.
        dropout: Dropout after each hidden dense layer and between LSTM layers, in [0, 1).
        in_channels: Channels per input frame; only out_channels (the frame, no optical flow).
        t_in: Input frames.
        t_out: Predicted frames.
        out_channels: Channels of a frame (the data's; the prediction has them).
        height: Frame height (the data's): the dense layers fix the frame size.
        width: Frame width (the data's).
    """

    dense1: int = 1024
    dense2: int = 256
    hidden: int = 256
    num_layers: int = 1
    dropout: float = 0.0
    in_channels: int = 1
    t_in: int = 10
    t_out: int = 10
    out_channels: int = 1
    height: int = 64
    width: int = 64

    def __post_init__(self) -> None:
        for name in ("dense1", "dense2", "hidden", "num_layers", "height", "width"):
            check_int(name, getattr(self, name))
        check_fraction("dropout", self.dropout)
        check_common(self.in_channels, self.t_in, self.t_out, "simple_lstm", self.out_channels)

    @property
    def pixels(self) -> int:
        """Values of one frame, C * H * W: the dense layers' outer width."""
        return self.out_channels * self.height * self.width


class FrameEncoder(nn.Module):
    """Flattened frame → dense1 → ReLU → dense2 → ReLU."""

    def __init__(self, pixels: int, dense1: int, dense2: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(pixels, dense1),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(dense1, dense2),
            nn.ReLU(),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (..., C*H*W) -> (..., dense2)
        return self.net(x)


class FrameDecoder(nn.Module):
    """LSTM output → dense2 → ReLU → dense1 → ReLU → C*H*W → sigmoid (pixels in [0, 1])."""

    def __init__(self, hidden: int, dense2: int, dense1: int, dropout: float, pixels: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(hidden, dense2),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(dense2, dense1),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(dense1, pixels),
            nn.Sigmoid(),
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        # (..., hidden) -> (..., C*H*W)
        return self.net(h)


class SimpleLSTM(nn.Module):
    """Dense encoder → LSTM → dense decoder, autoregressive without teacher forcing.

    The LSTM reads the `t_in` encoded input frames; its last output is decoded into the
    first prediction, which is encoded and fed back for the next step, `t_out - 1` times.
    The output goes through a sigmoid, so pixels lie in [0, 1].
    """

    def __init__(self, cfg: SimpleLSTMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = FrameEncoder(cfg.pixels, cfg.dense1, cfg.dense2, cfg.dropout)
        self.lstm = nn.LSTM(
            cfg.dense2,
            cfg.hidden,
            num_layers=cfg.num_layers,
            batch_first=True,
            # nn.LSTM only drops out between layers, and warns if asked to with one layer
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
        )
        self.decoder = FrameDecoder(cfg.hidden, cfg.dense2, cfg.dense1, cfg.dropout, cfg.pixels)

    def _recur(
        self, z: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """The LSTM in fp32, also under bf16 autocast.

        cuDNN's bf16 LSTM on an H200 gave gradients 12-28 % off fp32's (the LSTM's own up to 28 %,
        and every layer before it); with the recurrence in fp32 they were within 2-3 %, as bf16's
        dense layers allow (scripts/gpu_lstm_diag.py, torch 2.11 + cuDNN, 2026-12-04).
        """
        # autocast exists on cpu and cuda only (the memory estimate's meta pass has none to leave)
        fp32 = torch.autocast(z.device.type, enabled=False) if z.device.type in ("cpu", "cuda") else nullcontext()
        with fp32:
            return self.lstm(z.float(), state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predict (B, t_out, C, H, W) from x of shape (B, t_in, C, H, W), H x W the config's."""
        cfg = self.cfg
        check_input(x, cfg.t_in, cfg.in_channels, 1, "simple_lstm")
        b, t = x.shape[:2]
        if x.shape[3:] != (cfg.height, cfg.width):
            raise MMTuneError(f"simple_lstm expects {cfg.height} × {cfg.width} frames, got {tuple(x.shape[3:])}")
        z = self.encoder(x.reshape(b, t, -1))  # (B, t_in, dense2)
        out, state = self._recur(z, None)  # (B, t_in, hidden)
        frame = self.decoder(out[:, -1])  # (B, C*H*W)
        frames = [frame]
        for _ in range(self.cfg.t_out - 1):
            out, state = self._recur(self.encoder(frame).unsqueeze(1), state)  # (B, 1, hidden)
            frame = self.decoder(out[:, -1])  # (B, C*H*W)
            frames.append(frame)
        return torch.stack(frames, dim=1).view(b, cfg.t_out, cfg.out_channels, cfg.height, cfg.width)


@register_model(
    "simple_lstm",
    SimpleLSTMConfig,
    presets={"small": {"model": {"dense1": 256, "dense2": 64, "hidden": 64}, "train": {}}},
    # On an H200 (2026-12-04, batch 16) the fast path made it slower: bf16 0.79-0.82x eager, bf16 +
    # compile 0.72x. Its LSTM runs fp32 anyway (`_recur`), so autocast adds only casts.
    cuda_fast=False,
)
def build_simple_lstm(cfg: SimpleLSTMConfig) -> SimpleLSTM:
    """Build the dense LSTM baseline from its config."""
    return SimpleLSTM(cfg)
