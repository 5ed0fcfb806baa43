"""What a trained config costs: parameters, FLOPs per training sample, and its speeds on this hardware.

The sweep records one `Cost` per trial so the report can set accuracy against cost (the Pareto
panel), and `--objective mse+flops` can search both. FLOPs are counted, not timed: the same
number on any machine. The two speeds are measured where the trial ran, so they say as much
about the hardware as about the config (the record names both).
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import torch
from torch import nn

from mmtune.data.spec import MOVING_MNIST, ClipSpec


class Cost(NamedTuple):
    """One config's cost; the speeds are NaN until measured."""

    params: int  # trainable parameters
    flops_per_sample: float  # one training sample: forward + loss + backward (FlopCounterMode)
    train_samples_per_s: float  # measured training throughput (samples / training seconds of an epoch)
    infer_ms_per_clip: float  # measured: one clip's prediction (t_out frames), batched, under the trial's fast path


def count_params(model: nn.Module) -> int:
    """Trainable parameters of `model`."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_train_flops(model: str, cfg: Any, kl_weight: float = 0.0, batch: int = 2, device: str = "cpu",
                      spec: ClipSpec = MOVING_MNIST) -> float:
    """FLOPs of one training sample of clips of `spec`: forward + loss + backward, counted by FlopCounterMode.

    FlopCounterMode counts matrix multiplies and convolutions (2 FLOPs per multiply-add), the
    bulk of the work; element-wise ops, norms and the optimizer are not counted. oneDNN and
    cuDNN are off while counting: their fused RNN kernels (aten.mkldnn_rnn_layer,
    aten._cudnn_rnn) are opaque to FlopCounterMode, so an nn.LSTM counted 0 FLOPs; without
    them it runs as the matmuls FlopCounterMode counts (convolutions count the same either way).

    Example:
        >>> from mmtune.models import make_model_config
        >>> count_train_flops("conv_tau", make_model_config("conv_tau", preset="small")) > 0
        True
    """
    from torch.utils.flop_counter import FlopCounterMode

    from mmtune.metrics import VideoLoss
    from mmtune.models import get_model

    dev = torch.device(device)
    with torch.random.fork_rng(devices=[]):  # counting must not move the trial's own random stream
        torch.manual_seed(0)
        net = get_model(model, cfg).to(dev).train()
        h, w = spec.height, spec.width
        x = torch.rand(batch, spec.t_in, getattr(cfg, "in_channels", spec.channels), h, w, device=dev)
        y = torch.rand(batch, spec.t_out, spec.channels, h, w, device=dev)
    loss_fn = VideoLoss(kl_weight=kl_weight)
    counter = FlopCounterMode(display=False, custom_mapping={torch.ops.aten.convolution_backward: _conv_backward_flop})
    fused = torch.backends.mkldnn.enabled, torch.backends.cudnn.enabled
    # Set directly: torch.backends.mkldnn.flags() would also set allow_tf32 and warn about Intel GPUs.
    torch.backends.mkldnn.enabled = torch.backends.cudnn.enabled = False  # type: ignore[assignment]
    try:
        with counter:
            loss, _ = loss_fn(net(x), y)
            loss.backward()
    finally:
        torch.backends.mkldnn.enabled, torch.backends.cudnn.enabled = fused
    return counter.get_total_flops() / batch


def _conv_backward_flop(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                        _output_padding, groups, output_mask, out_shape, **kwargs) -> int:
    """torch's convolution_backward formula with the weight gradient of grouped convs fixed.

    torch (2.14) counts the weight gradient of a grouped convolution as if it were dense, which
    overcounts a depth-wise conv by its channel count (ConvTAU's 4096-channel MLP dwconv made
    the training step look 8x dearer than 3x its forward); the weight gradient is divided here
    by `groups`, the input gradient already used the grouped weight shape.
    """
    from torch.utils.flop_counter import conv_flop_count

    def t(shape):
        return [shape[1], shape[0], *shape[2:]]

    flops = 0
    if output_mask[0]:
        flops += conv_flop_count(grad_out_shape, w_shape, list(out_shape[0]), not transposed)
    if output_mask[1]:
        gw = list(out_shape[1])
        if transposed:
            flops += conv_flop_count(t(grad_out_shape), t(x_shape), t(gw), transposed=False) // groups
        else:
            flops += conv_flop_count(t(x_shape), t(grad_out_shape), t(gw), transposed=False) // groups
    return flops


def infer_ms_per_clip(trainer: Any, clips: int = 8, repeats: int = 3) -> float:
    """Milliseconds per clip of `trainer`'s model predicting `clips` val clips at once (best of `repeats`)."""
    from mmtune.training.loop import _autocast

    model, device, fast = trainer.model, trainer.device, trainer.fast
    val = trainer.val_batches()
    n = min(clips, len(val))
    x, _ = val.get(torch.arange(n))
    model.eval()
    best = float("inf")
    with torch.no_grad():
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            with _autocast(device, fast):
                model(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            best = min(best, time.perf_counter() - t0)
    return 1000.0 * best / n


def static_cost(trainer: Any) -> Cost:
    """Parameters and FLOPs of `trainer`'s config (counted on the CPU), speeds not yet measured."""
    trial = trainer.trial
    flops = count_train_flops(trial.model, trial.model_cfg, kl_weight=trial.kl_weight, batch=1, spec=trainer.spec)
    return Cost(count_params(trainer.model), flops, float("nan"), float("nan"))
