"""The shape of a clip: what the data gives and what every model, metric and report reads from it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mmtune.errors import MMTuneError


@dataclass(frozen=True)
class ClipSpec:
    """One clip: `t_in` input frames then `t_out` target frames, each `channels` x `height` x `width`.

    Example:
        >>> ClipSpec(t_in=8, t_out=8, channels=2, height=32, width=48).pixels
        3072
    """

    t_in: int = 10
    t_out: int = 10
    channels: int = 1
    height: int = 64
    width: int = 64

    def __post_init__(self) -> None:
        for name in ("t_in", "t_out", "channels", "height", "width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise MMTuneError(f"{name} must be a positive integer, got {value!r}")

    @property
    def frames(self) -> int:
        """Frames of one clip, inputs and targets."""
        return self.t_in + self.t_out

    @property
    def pixels(self) -> int:
        """Values per frame, C * H * W (the sum of mse_frame runs over them)."""
        return self.channels * self.height * self.width

    def describe(self) -> str:
        """'10+10 frames of 1x64x64'."""
        return f"{self.t_in}+{self.t_out} frames of {self.channels}x{self.height}x{self.width}"


MOVING_MNIST = ClipSpec()  # Srivastava's protocol: 10 frames in, 10 out, one grey 64x64 channel

def from_known_keys(cls: Any, values: dict[str, Any], what: str) -> Any:
    """`cls(**values)` for a dataclass, an unknown key named in one line (DataConfig, ArrayDataConfig)."""
    known = set(cls.__dataclass_fields__)
    unknown = sorted(set(values) - known)
    if unknown:
        raise MMTuneError(f"unknown {what} key(s) {unknown}; expected some of {sorted(known)}")
    return cls(**values)
