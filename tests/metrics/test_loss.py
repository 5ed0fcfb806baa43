"""Tests for mmtune.metrics.loss: TAU's differential divergence and VideoLoss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import mmtune.metrics.loss as loss_module
from mmtune.errors import MMTuneError
from mmtune.metrics import VideoLoss, differential_divergence


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    """Uniform [0, 1) tensor from a fixed seed."""
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def test_kl_weight_zero_is_plain_mse(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> torch.Tensor:
        raise AssertionError("differential_divergence must not run when kl_weight == 0")

    monkeypatch.setattr(loss_module, "differential_divergence", fail)
    pred, true = _rand(2, 10, 1, 64, 64, seed=1), _rand(2, 10, 1, 64, 64, seed=2)
    total, parts = VideoLoss(kl_weight=0.0)(pred, true)
    expected = F.mse_loss(pred, true)
    assert total.dim() == 0
    assert total.item() == pytest.approx(expected.item())
    assert {k: v.item() for k, v in parts.items()} == {"mse": pytest.approx(expected.item()), "kl": 0.0}


def test_total_is_mse_plus_weighted_kl() -> None:
    pred, true = _rand(2, 10, 1, 64, 64, seed=3), _rand(2, 10, 1, 64, 64, seed=4)
    total, parts = VideoLoss(kl_weight=0.5, temperature=0.2)(pred, true)
    kl = differential_divergence(pred, true, temperature=0.2).item()
    assert parts["kl"].item() == pytest.approx(kl)
    assert parts["mse"].item() == pytest.approx(F.mse_loss(pred, true).item())
    assert total.item() == pytest.approx(parts["mse"].item() + 0.5 * kl, rel=1e-6)


def test_loss_reads_nothing_back_to_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """The parts stay tensors: an .item() per call would sync the GPU on every training step."""
    pred = _rand(2, 10, 1, 64, 64, seed=3).requires_grad_()
    true = _rand(2, 10, 1, 64, 64, seed=4)

    def no_sync(self: torch.Tensor) -> float:
        raise AssertionError("VideoLoss.forward called .item() (a host-device sync)")

    monkeypatch.setattr(torch.Tensor, "item", no_sync)
    for weight in (0.0, 0.1):
        total, parts = VideoLoss(kl_weight=weight)(pred, true)
        assert all(isinstance(v, torch.Tensor) and not v.requires_grad for v in parts.values())
        assert total.requires_grad


def test_kl_zero_when_equal_positive_otherwise() -> None:
    x = _rand(2, 10, 1, 64, 64, seed=5)
    assert differential_divergence(x, x).item() == 0.0
    y = _rand(2, 10, 1, 64, 64, seed=6)
    assert differential_divergence(y, x).item() > 0.0
    # a constant brightness offset leaves every frame difference, hence the KL, unchanged
    assert differential_divergence(x + 0.1, x).item() == pytest.approx(0.0, abs=1e-6)


def test_kl_hand_computed_direction() -> None:
    # one sample, one difference over two pixels: true diff (0, 0) -> P = (1/2, 1/2);
    # pred diff (0.1, 0) / tau 0.1 = logits (1, 0) -> Q = (e, 1) / (1 + e)
    true = torch.zeros(1, 2, 1, 1, 2)
    pred = torch.zeros(1, 2, 1, 1, 2)
    pred[0, 1, 0, 0, 0] = 0.1
    q = torch.tensor([math.e, 1.0]) / (1 + math.e)
    kl_true_pred = sum(0.5 * math.log(0.5 / qi) for qi in q.tolist())  # KL(P || Q)
    kl_pred_true = sum(qi * math.log(qi / 0.5) for qi in q.tolist())  # KL(Q || P)
    got = differential_divergence(pred, true, temperature=0.1).item()
    # OpenSTL's direction KL(pred || true), averaged over the 2 pixel terms
    assert got == pytest.approx(kl_pred_true / 2, rel=1e-5)
    assert got != pytest.approx(kl_true_pred / 2, rel=1e-3)


def test_kl_matches_openstl_formula() -> None:
    pred, true = _rand(3, 10, 1, 16, 16, seed=7), _rand(3, 10, 1, 16, 16, seed=8)
    tau = 0.1
    log_q = F.log_softmax((pred[:, 1:] - pred[:, :-1]).reshape(27, -1) / tau, dim=-1)
    log_p = F.log_softmax((true[:, 1:] - true[:, :-1]).reshape(27, -1) / tau, dim=-1)
    # OpenSTL diff_div_reg: (q * log(q / p)).mean() over every element
    expected = (log_q.exp() * (log_q - log_p)).mean()
    via_kl_div = F.kl_div(log_p, log_q, reduction="sum", log_target=True) / log_q.numel()
    assert differential_divergence(pred, true, tau).item() == pytest.approx(expected.item(), rel=1e-5)
    assert expected.item() == pytest.approx(via_kl_div.item(), rel=1e-5)


def test_gradient_flows_to_pred() -> None:
    pred = _rand(2, 10, 1, 64, 64, seed=9).requires_grad_()
    true = _rand(2, 10, 1, 64, 64, seed=10)
    total, _ = VideoLoss(kl_weight=1.0)(pred, true)
    total.backward()
    assert pred.grad is not None
    assert torch.isfinite(pred.grad).all()
    mse_only = torch.autograd.grad(F.mse_loss(pred, true), pred)[0]
    assert not torch.allclose(pred.grad, mse_only)  # the KL term contributes

    kl_grad = torch.autograd.grad(differential_divergence(pred, true), pred)[0]
    assert kl_grad.abs().sum() > 0


def test_bf16_inputs_give_float32_loss() -> None:
    pred = _rand(2, 10, 1, 64, 64, seed=11).bfloat16().requires_grad_()
    true = _rand(2, 10, 1, 64, 64, seed=12).bfloat16()
    total, parts = VideoLoss(kl_weight=0.1)(pred, true)
    assert total.dtype == torch.float32
    assert math.isfinite(parts["kl"].item()) and parts["kl"].item() > 0
    total.backward()
    assert pred.grad is not None and pred.grad.dtype == torch.bfloat16


@pytest.mark.parametrize("kl_weight", [-0.1, float("nan"), float("inf")])
def test_kl_weight_validation(kl_weight: float) -> None:
    with pytest.raises(MMTuneError, match=f"kl_weight must be >= 0, got {kl_weight}"):
        VideoLoss(kl_weight=kl_weight)


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan")])
def test_temperature_validation(temperature: float) -> None:
    with pytest.raises(MMTuneError, match=f"temperature must be > 0, got {temperature}"):
        VideoLoss(kl_weight=0.1, temperature=temperature)
    x = torch.zeros(1, 3, 1, 4, 4)
    with pytest.raises(MMTuneError, match="temperature"):
        differential_divergence(x, x, temperature=temperature)


def test_mmtune_error_is_value_error() -> None:
    with pytest.raises(ValueError):
        VideoLoss(kl_weight=-1.0)


def test_input_validation() -> None:
    with pytest.raises(MMTuneError, match="T >= 2"):
        differential_divergence(torch.zeros(1, 1, 1, 4, 4), torch.zeros(1, 1, 1, 4, 4))
    with pytest.raises(MMTuneError, match="same shape"):
        VideoLoss(kl_weight=0.1)(torch.zeros(1, 3, 1, 4, 4), torch.zeros(1, 2, 1, 4, 4))
