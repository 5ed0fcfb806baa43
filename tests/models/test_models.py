"""Every registered model is tested by being registered: shapes, gradients, configs, errors."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from mmtune.data.spec import ClipSpec
from mmtune.errors import MMTuneError
from mmtune.models import (
    config_fields,
    get_entry,
    get_model,
    list_models,
    make_model_config,
    preset_train_overrides,
    register_model,
)
from mmtune.models._layers import DropPath

MODELS = list_models()
B = 2


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _input(in_channels: int = 1) -> torch.Tensor:
    return torch.rand(B, 10, in_channels, 64, 64)


def test_the_three_models_are_registered() -> None:
    assert {"simple_lstm", "conv_lstm", "conv_tau"} <= set(MODELS)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("preset", [None, "small"])
def test_forward_shape_and_range(name: str, preset: str | None) -> None:
    model = get_model(name, make_model_config(name, preset=preset))
    with torch.no_grad():
        y = model(_input())
    assert y.shape == (B, 10, 1, 64, 64)
    assert y.dtype == torch.float32
    assert torch.isfinite(y).all()
    cfg = make_model_config(name, preset=preset)
    if getattr(cfg, "output", "sigmoid") == "sigmoid":  # conv_tau's default is linear (clamped at evaluation)
        assert y.min() >= 0 and y.max() <= 1


def test_conv_tau_output_layer_options() -> None:
    torch.manual_seed(0)
    linear = get_model("conv_tau", make_model_config("conv_tau", preset="small"))
    torch.manual_seed(0)
    squashed = get_model("conv_tau", make_model_config("conv_tau", preset="small", output="sigmoid"))
    x = _input()
    with torch.no_grad():
        y_lin, y_sig = linear(x), squashed(x)
    # same weights: the sigmoid variant is the linear readout squashed, so it never reaches 0 or 1
    torch.testing.assert_close(y_sig, torch.sigmoid(y_lin))
    assert y_lin.min() < 0 < y_sig.min()
    with pytest.raises(MMTuneError, match="output must be one of"):
        make_model_config("conv_tau", output="tanh")


@pytest.mark.parametrize("name", MODELS)
def test_gradients_reach_every_parameter(name: str) -> None:
    model = get_model(name, make_model_config(name, preset="small"))
    model.train()
    x = _input()
    loss = nn.functional.mse_loss(model(x), x[:, :, :1])
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{pname} has an all-zero gradient"


@pytest.mark.parametrize("name", MODELS)
def test_model_carries_its_config(name: str) -> None:
    cfg = make_model_config(name, preset="small")
    model = get_model(name, cfg)
    assert model.cfg is cfg


@pytest.mark.parametrize("name", MODELS)
def test_every_config_has_the_common_fields(name: str) -> None:
    cfg = make_model_config(name)
    assert (cfg.in_channels, cfg.t_in, cfg.t_out) == (1, 10, 10)


@pytest.mark.parametrize("name", MODELS)
def test_every_preset_builds(name: str) -> None:
    entry = get_entry(name)
    assert "small" in entry.presets
    for preset, spec in entry.presets.items():
        assert set(spec) == {"model", "train"}, f"{name}/{preset} has keys {sorted(spec)}"
        make_model_config(name, preset=preset)


@pytest.mark.parametrize("name", MODELS)
def test_unknown_config_key_raises(name: str) -> None:
    with pytest.raises(MMTuneError, match="not_a_knob"):
        make_model_config(name, not_a_knob=1)


@pytest.mark.parametrize("name", MODELS)
def test_wrong_config_type_raises(name: str) -> None:
    other = next((n for n in MODELS if n != name), None)
    wrong = make_model_config(other) if other else object()
    with pytest.raises(TypeError):
        get_model(name, wrong)
    with pytest.raises(TypeError):
        get_model(name, {"t_in": 10})


@pytest.mark.parametrize("name", MODELS)
def test_duplicate_registration_raises(name: str) -> None:
    cfg_cls = get_entry(name).config_cls
    with pytest.raises(ValueError, match="already registered"):
        register_model(name, cfg_cls)(lambda cfg: nn.Identity())
    assert get_entry(name).config_cls is cfg_cls


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize(
    ("field", "value"),
    [("in_channels", 2), ("in_channels", 0), ("t_in", 0), ("t_out", 0), ("t_in", 2.5)],
)
def test_invalid_common_fields_raise(name: str, field: str, value: Any) -> None:
    with pytest.raises(MMTuneError, match=field):
        make_model_config(name, **{field: value})


@pytest.mark.parametrize(
    ("name", "overrides", "field"),
    [
        ("simple_lstm", {"in_channels": 3}, "in_channels"),
        ("simple_lstm", {"dense1": 0}, "dense1"),
        ("simple_lstm", {"hidden": -1}, "hidden"),
        ("simple_lstm", {"num_layers": 0}, "num_layers"),
        ("simple_lstm", {"dropout": 1.0}, "dropout"),
        ("simple_lstm", {"dropout": -0.1}, "dropout"),
        ("conv_lstm", {"in_channels": 3}, "in_channels"),
        ("conv_lstm", {"kernel_size": 4}, "kernel_size"),
        ("conv_lstm", {"kernel_size": 9}, "kernel_size"),
        ("conv_lstm", {"kernel_size": True}, "kernel_size"),
        ("conv_lstm", {"n_f": 0}, "n_f"),
        ("conv_lstm", {"skip": 1}, "skip"),
        ("conv_tau", {"N_S": 3}, "N_S"),
        ("conv_tau", {"N_S": 0}, "N_S"),
        ("conv_tau", {"N_S": 14}, "N_S"),
        ("conv_tau", {"N_S": 1000}, "N_S"),
        ("conv_tau", {"enc_kernel": 4}, "enc_kernel"),
        ("conv_tau", {"dec_kernel": 9}, "dec_kernel"),
        ("conv_tau", {"hid_S": 0}, "hid_S"),
        ("conv_tau", {"hid_T": 0}, "hid_T"),
        ("conv_tau", {"N_T": 0}, "N_T"),
        ("conv_tau", {"mlp_ratio": 0.0}, "mlp_ratio"),
        ("conv_tau", {"drop_path": 1.0}, "drop_path"),
        ("conv_tau", {"in_channels": 2}, "in_channels"),
        ("conv_tau", {"t_out": 5}, "t_out"),
    ],
)
def test_invalid_config_raises_naming_the_field(
    name: str, overrides: dict[str, Any], field: str
) -> None:
    with pytest.raises(MMTuneError, match=field) as info:
        make_model_config(name, **overrides)
    assert repr(overrides[field]) in str(info.value)


def test_error_messages_say_what_is_allowed() -> None:
    with pytest.raises(MMTuneError, match="kernel_size must be one of 3, 5, 7, got 4"):
        make_model_config("conv_lstm", kernel_size=4)
    with pytest.raises(MMTuneError, match="N_S must be an even number ≥ 2, got 3"):
        make_model_config("conv_tau", N_S=3)
    with pytest.raises(MMTuneError, match=r"^N_S must be at most 12 for 64x64 frames \(each second layer halves "
                                          r"H and W\), got 1000$"):
        make_model_config("conv_tau", N_S=1000)


def test_conv_tau_takes_the_deepest_encoder_the_frame_allows() -> None:
    """N_S = 12 (the most the config allows) halves 64 px six times, to 1 px, and back."""
    model = get_model("conv_tau", make_model_config("conv_tau", preset="small", N_S=12))
    with torch.no_grad():
        assert model(_input()).shape == (B, 10, 1, 64, 64)


@pytest.mark.parametrize("name", MODELS)
def test_wrong_input_shape_raises(name: str) -> None:
    model = get_model(name, make_model_config(name, preset="small"))
    with pytest.raises(MMTuneError, match="expects input"):
        model(torch.rand(B, 9, 1, 64, 64))


def test_conv_tau_takes_flow_channels() -> None:
    model = get_model("conv_tau", make_model_config("conv_tau", preset="small", in_channels=3))
    with torch.no_grad():
        y = model(_input(in_channels=3))
    assert y.shape == (B, 10, 1, 64, 64)
    with pytest.raises(MMTuneError, match="in_channels|expects input"):
        model(_input(in_channels=1))


@pytest.mark.parametrize("name", ["simple_lstm", "conv_lstm"])
def test_recurrent_models_predict_t_out_frames(name: str) -> None:
    model = get_model(name, make_model_config(name, preset="small", t_in=6, t_out=4))
    with torch.no_grad():
        y = model(torch.rand(B, 6, 1, 64, 64))
    assert y.shape == (B, 4, 1, 64, 64)


def test_conv_lstm_without_skip() -> None:
    model = get_model("conv_lstm", make_model_config("conv_lstm", preset="small", skip=False))
    with torch.no_grad():
        assert model(_input()).shape == (B, 10, 1, 64, 64)


def test_drop_path_drops_whole_samples_in_training_only() -> None:
    drop = DropPath(0.5).train()
    x = torch.ones(1000, 3, 4, 4)
    y = drop(x).flatten(1)  # (1000, 48)
    dropped, kept = (y == 0).all(1), (y == 2.0).all(1)  # kept samples are scaled by 1 / (1 - p)
    assert (dropped | kept).all(), "each sample's branch is dropped or kept whole"
    assert 0.4 < dropped.float().mean().item() < 0.6  # p = 0.5 (binomial sd 0.016)
    assert abs(y.mean().item() - 1.0) < 0.1  # the expectation is kept
    assert torch.equal(drop.eval()(x), x)  # evaluation: nothing dropped, nothing scaled
    assert torch.equal(DropPath(0.0).train()(x), x)


def test_conv_tau_drop_path_drops_in_training_only() -> None:
    dropping = get_model("conv_tau", make_model_config("conv_tau", preset="small", drop_path=0.5))
    plain = get_model("conv_tau", make_model_config("conv_tau", preset="small"))
    plain.load_state_dict(dropping.state_dict())  # the same weights, only the rate differs
    x = torch.rand(8, 10, 1, 64, 64)
    with torch.no_grad():
        dropping.eval(), plain.eval()
        assert torch.equal(dropping(x), plain(x))  # evaluation: the rate changes nothing
        dropping.train(), plain.train()  # (batch-norm uses batch statistics: no state carries over)
        first, second, ref = dropping(x), dropping(x), plain(x)
    assert not torch.equal(first, ref), "training with drop_path 0.5 dropped no residual branch"
    assert not torch.equal(first, second), "each training forward draws its own drops"


def test_conv_tau_seed2023_preset() -> None:
    cfg = make_model_config("conv_tau", preset="seed2023")
    assert (cfg.hid_S, cfg.hid_T, cfg.N_S, cfg.N_T) == (32, 128, 4, 8)
    assert (cfg.enc_kernel, cfg.dec_kernel) == (3, 5)
    assert preset_train_overrides("conv_tau", "seed2023") == {
        "lr": 0.01,
        "weight_decay": 0.05,
        "kl_weight": 0.5,
        "batch_size": 16,
    }


def test_overrides_beat_the_preset() -> None:
    cfg = make_model_config("conv_tau", preset="seed2023", N_T=2)
    assert (cfg.hid_S, cfg.N_T) == (32, 2)


# The clip specs every model is tested on: Moving MNIST's, and a non-square 2-channel one of 8+8 frames.
SPECS = [ClipSpec(), ClipSpec(t_in=8, t_out=8, channels=2, height=16, width=24)]


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.describe())
def test_model_follows_the_clip_spec(name: str, spec: ClipSpec) -> None:
    """A model whose config has out_channels predicts the data's channels, frames and frame size."""
    fields = set(config_fields(name))
    if "out_channels" not in fields:  # a plugin that predicts one grey channel only
        pytest.skip(f"{name} has no out_channels")
    values = {"t_in": spec.t_in, "t_out": spec.t_out, "out_channels": spec.channels, "in_channels": spec.channels}
    values.update({k: getattr(spec, k) for k in ("height", "width") if k in fields})
    model = get_model(name, make_model_config(name, preset="small", **values))
    x = torch.rand(B, spec.t_in, spec.channels, spec.height, spec.width)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (B, spec.t_out, spec.channels, spec.height, spec.width)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize(
    "name, size, message",
    [
        ("conv_tau", {"height": 18, "width": 18},
         "N_S must be at most 2 for 18x18 frames (each second layer halves H and W), got 4"),
        ("conv_lstm", {"height": 15, "width": 16},
         "conv_lstm needs H and W divisible by 2 (the ConvLSTM cells run at half size), got 15x16"),
    ],
)
def test_a_frame_the_architecture_cannot_take_is_one_line(name: str, size: dict[str, int], message: str) -> None:
    with pytest.raises(MMTuneError) as info:
        make_model_config(name, N_S=4, **size) if name == "conv_tau" else make_model_config(name, **size)
    assert str(info.value) == message
