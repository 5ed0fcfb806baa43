"""Training loss: pixel MSE plus TAU's differential divergence regularisation.

TAU (Tan et al., "Temporal Attention Unit", CVPR 2023) adds to the MSE a term that compares how
the frames *change*: the frame differences of prediction and target are each turned into a
distribution over pixels by a softmax with temperature, and the two distributions are compared
with a KL divergence. MSE alone rewards blurry averages; this term rewards getting the motion's
spatial layout right.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmtune.errors import MMTuneError
from mmtune.metrics.video import _check_video_pair

__all__ = ["VideoLoss", "differential_divergence"]


def _check_temperature(temperature: float) -> None:
    """Raise unless temperature is a finite number > 0."""
    if not (math.isfinite(temperature) and temperature > 0):
        raise MMTuneError(f"temperature must be > 0, got {temperature}")


def differential_divergence(pred: Tensor, true: Tensor, temperature: float = 0.1) -> Tensor:
    """TAU's differential divergence: KL between softmaxed frame differences (OpenSTL's scale).

    For prediction and target, ``d_t = x[:, t+1] - x[:, t]`` (T-1 differences per sample) is
    flattened over ``C*H*W`` and mapped to ``softmax(d_t / temperature)``. As in OpenSTL's
    ``diff_div_reg`` (the reference TAU code), the result is

        ``KL(softmax(pred_diff / temperature) || softmax(true_diff / temperature))``

    taken as the mean over all ``B * (T-1) * C*H*W`` terms of ``Q * (log Q - log P)`` (Q the
    prediction's distribution, P the target's), so that TAU's published weights (alpha 0.1)
    mean the same here. Softmaxes are computed as ``log_softmax`` (no epsilon); inputs are
    upcast to float32.

    Args:
        pred: Predicted frames, (B, T, C, H, W) with T >= 2.
        true: Target frames, same shape.
        temperature: Softmax temperature, > 0. Smaller values sharpen the distributions.

    Returns:
        A 0-d float32 tensor >= 0, zero when ``pred == true``, differentiable w.r.t. ``pred``.

    Example:
        >>> import torch
        >>> x = torch.rand(2, 10, 1, 64, 64)
        >>> differential_divergence(x, x).item()
        0.0
    """
    _check_temperature(temperature)
    _check_video_pair(pred, true)
    if pred.shape[1] < 2:
        raise MMTuneError(
            f"differential_divergence needs at least 2 frames (T >= 2), got T={pred.shape[1]}"
        )
    pred = pred.float()
    true = true.float()
    pred_diff = (pred[:, 1:] - pred[:, :-1]).flatten(start_dim=2)  # (B, T-1, C*H*W)
    true_diff = (true[:, 1:] - true[:, :-1]).flatten(start_dim=2)
    log_q = F.log_softmax(pred_diff / temperature, dim=-1)
    log_p = F.log_softmax(true_diff / temperature, dim=-1)
    return (log_q.exp() * (log_q - log_p)).mean()  # mean over (B, T-1, C*H*W) terms


class VideoLoss(nn.Module):
    """``mse + kl_weight * differential_divergence``, the TAU training objective.

    The MSE is the plain mean over all elements with pixels in [0, 1] (``F.mse_loss``), not
    the per-frame sum that ``mmtune.metrics.mse_frame`` reports. With ``kl_weight == 0`` the
    divergence is not computed at all.

    Args:
        kl_weight: Weight of the divergence term, >= 0.
        temperature: Softmax temperature of the divergence, > 0.

    Example:
        >>> import torch
        >>> loss_fn = VideoLoss(kl_weight=0.1)
        >>> pred, true = torch.zeros(2, 10, 1, 64, 64), torch.full((2, 10, 1, 64, 64), 0.5)
        >>> total, parts = loss_fn(pred, true)
        >>> {k: v.item() for k, v in parts.items()}
        {'mse': 0.25, 'kl': 0.0}
    """

    def __init__(self, kl_weight: float, temperature: float = 0.1) -> None:
        super().__init__()
        if not (math.isfinite(kl_weight) and kl_weight >= 0):
            raise MMTuneError(f"kl_weight must be >= 0, got {kl_weight}")
        _check_temperature(temperature)
        self.kl_weight = float(kl_weight)
        self.temperature = float(temperature)

    def forward(self, pred: Tensor, true: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Compute the loss.

        Args:
            pred: Predicted frames, (B, T, C, H, W), pixels in [0, 1]; T >= 2 if kl_weight > 0.
            true: Target frames, same shape.

        Returns:
            ``(total, parts)``: the 0-d float32 loss to backpropagate, and ``{"mse": ...,
            "kl": ...}`` as detached 0-d tensors on the inputs' device (``kl`` is zero when
            ``kl_weight == 0``). Nothing is read back to the host here: a ``.item()`` per step
            would sync the GPU every step, so the caller reads the parts only when it logs.
        """
        _check_video_pair(pred, true)
        mse = F.mse_loss(pred.float(), true.float())
        if self.kl_weight == 0:
            return mse, {"mse": mse.detach(), "kl": torch.zeros_like(mse)}
        kl = differential_divergence(pred, true, self.temperature)
        total = mse + self.kl_weight * kl
        return total, {"mse": mse.detach(), "kl": kl.detach()}

    def extra_repr(self) -> str:
        """Shown by ``repr(module)``."""
        return f"kl_weight={self.kl_weight}, temperature={self.temperature}"
