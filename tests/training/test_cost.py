"""A config's cost: parameter count, counted FLOPs, measured inference time."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from mmtune.data.spec import ClipSpec
from mmtune.models import list_models, make_model_config
from mmtune.training.config import build_trial
from mmtune.training.cost import count_params, count_train_flops, infer_ms_per_clip, static_cost
from mmtune.training.loop import Trainer


def test_count_params_by_hand() -> None:
    net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2, bias=False))
    net[1].weight.requires_grad_(False)  # frozen weights do not count
    assert count_params(net) == 3 * 4 + 4


def test_flops_of_one_conv_by_hand() -> None:
    """conv_lstm's cost grows with its hidden channels, and a hand count bounds one layer."""
    small = count_train_flops("conv_lstm", make_model_config("conv_lstm", n_f=8, hidden=8, kernel_size=3))
    wide = count_train_flops("conv_lstm", make_model_config("conv_lstm", n_f=8, hidden=16, kernel_size=3))
    assert 2.5 < wide / small < 4.5  # the cells' convs are quadratic in hidden channels
    # one ConvLSTM cell gate conv at 32x32 (hidden 8: (8+8) in -> 32 out, 3x3) is 2*16*32*9*1024 FLOPs
    # forward; 20 steps x 4 cells x 3 (forward + 2 backward) bounds the network from below
    assert small > 20 * 4 * 3 * 2 * 16 * 32 * 9 * 1024 * 0.5


def test_simple_lstm_flops_by_hand() -> None:
    """count_train_flops of a tiny simple_lstm equals a count derived from its layer sizes alone."""
    t_in, t_out, h, w, d1, d2, hidden = 3, 2, 4, 4, 8, 6, 5
    cfg = make_model_config("simple_lstm", dense1=d1, dense2=d2, hidden=hidden, t_in=t_in, t_out=t_out,
                            height=h, width=w)
    counted = count_train_flops("simple_lstm", cfg, spec=ClipSpec(t_in=t_in, t_out=t_out, height=h, width=w))
    # A Linear(a, b) on one row is a*b multiply-adds = 2ab FLOPs forward; backward is the same again
    # for the weight gradient and again for the input gradient: 3 * 2ab in all. Bias adds, activations,
    # the LSTM's gate element-wise ops and the MSE loss are not counted, so the count is exact.
    pixels, steps = h * w, t_in + t_out - 1  # the LSTM reads t_in frames, then t_out - 1 fed-back predictions
    encoder = 2 * (pixels * d1 + d1 * d2)  # per encoded frame: t_in inputs + t_out - 1 predictions
    lstm = 4 * 2 * (d2 + hidden) * hidden  # per step: 4 gates, each [x, h] (d2 + hidden) -> hidden
    decoder = 2 * (hidden * d2 + d2 * d1 + d1 * pixels)  # per predicted frame
    forward = steps * encoder + steps * lstm + t_out * decoder
    # two input gradients are never computed: of the raw input frames (the first Linear on the t_in
    # inputs, 2 * pixels * d1 each) and of the LSTM's zero initial state (the first step's 4 gates on h0)
    expected = 3 * forward - t_in * 2 * pixels * d1 - 4 * 2 * hidden * hidden
    assert expected == 11_008
    assert counted == expected  # 5928 while oneDNN's fused LSTM kernel hid the LSTM's matmuls


def test_counting_leaves_the_random_stream_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    count_train_flops("simple_lstm", make_model_config("simple_lstm", preset="small"))
    assert torch.equal(torch.rand(3), expected)


def test_static_cost_of_a_trial_by_hand(tmp_path) -> None:
    """static_cost of a real tiny simple_lstm trial on its own 3+2 frames of 4x4 equals a count made
    from the layer sizes alone: the parameters, and the FLOPs of test_simple_lstm_flops_by_hand (11,008),
    so the cost follows the trial's data (not Moving MNIST's 64x64) and counts one sample, not a batch."""
    clips = np.random.default_rng(0).integers(0, 256, (10, 5, 4, 4), dtype=np.uint8)
    np.save(tmp_path / "clips.npy", clips)
    trial = build_trial("simple_lstm", model_overrides={"dense1": 8, "dense2": 6, "hidden": 5},
                        train_overrides={"epochs": 1, "batch_size": 2, "device": "cpu"},
                        data_overrides={"path": str(tmp_path / "clips.npy"), "layout": "NTHW", "t_in": 3, "t_out": 2})
    cost = static_cost(Trainer(trial, progress=False))
    encoder = (16 * 8 + 8) + (8 * 6 + 6)  # Linear(16 pixels, 8), Linear(8, 6), with biases
    lstm = 4 * 5 * (6 + 5) + 2 * 4 * 5  # 4 gates: input and hidden weights, two bias vectors
    decoder = (5 * 6 + 6) + (6 * 8 + 8) + (8 * 16 + 16)
    assert cost.params == encoder + lstm + decoder == 686
    assert cost.flops_per_sample == 11_008
    assert math.isnan(cost.train_samples_per_s) and math.isnan(cost.infer_ms_per_clip)


@pytest.mark.parametrize("model", list_models())
def test_static_cost_and_inference_time(model: str) -> None:
    """Every model's counted FLOPs are per sample: a batch of 3 counts exactly 3 times what
    static_cost's batch of 1 does (matmuls and convs scale linearly with the batch), so both give the
    same count per sample; a count that forgot to divide by the batch, or divided by the wrong
    number, breaks this. The inference time is a real, positive timing."""
    trial = build_trial(model, "small", train_overrides={"epochs": 1, "batch_size": 4},
                        data_overrides={"train_size": 8, "val_size": 4, "test_size": 4})
    trainer = Trainer(trial, progress=False)
    cost = static_cost(trainer)
    three = count_train_flops(model, trial.model_cfg, kl_weight=trial.kl_weight, batch=3, spec=trainer.spec)
    assert cost.flops_per_sample > 0 and three == cost.flops_per_sample
    ms = infer_ms_per_clip(trainer, clips=2, repeats=1)
    assert 0 < ms < 60_000
