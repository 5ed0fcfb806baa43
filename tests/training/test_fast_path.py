"""The fast path (bf16 autocast, and on CUDA channels_last and friends) must compute the same
gradients as fp32 eager, parameter by parameter, within bf16's precision."""

from __future__ import annotations

import copy

import pytest
import torch

from mmtune.bench.bench import fast_path_gradients
from mmtune.metrics import VideoLoss
from mmtune.models import get_entry, get_model, list_models, make_model_config
from mmtune.training import loop

# bf16 keeps 8 significant bits (relative step 2^-8 = 0.4 %); after a forward and a backward through
# a few layers, every parameter's gradient of a correct bf16 path lands within 2.8 % of fp32 here
# (the small presets, torch 2.14.1, AVX512-BF16). A gradient counts as wrong when
# ||g_fast - g_fp32|| > REL_TOL * ||g_fp32|| + ABS_TOL * g_scale, g_scale the largest per-parameter
# gradient norm; ABS_TOL only keeps an exactly-zero true gradient from failing on rounding noise.
# The channels_last + bf16 bug of conv_tau's dilated depth-wise conv gives relative errors of 1.25
# on tensors with 3e-4 of g_scale, so the floor must stay far below that.
REL_TOL = 0.05
ABS_TOL = 1e-6

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def gradient_mismatches(name: str, device: torch.device, channels_last: bool | None = None) -> list[str]:
    """The parameters whose fast-path gradient is outside the tolerance (empty: the path is right)."""
    torch.manual_seed(0)
    model = get_model(name, make_model_config(name, preset="small"))
    gen = torch.Generator().manual_seed(1)
    clip = torch.rand(4, 20, 1, 64, 64, generator=gen)
    batch = (clip[:, :10], clip[:, 10:])
    ref = fast_path_gradients(model, name, device, False, batch)
    if channels_last is None:
        fast = fast_path_gradients(model, name, device, True, batch)
    else:  # the layout decision forced, to show what the test catches
        orig = loop.prepare_model
        try:
            loop.prepare_model = lambda m, n, d, f, compile=None: orig(m, n, d, f, channels_last=channels_last,
                                                                      compile=False)
            fast = fast_path_gradients(model, name, device, True, batch)
        finally:
            loop.prepare_model = orig
    assert set(fast) == set(ref), "the fast path must train the same parameters"
    # bf16 rounds: a fast path whose gradients equal fp32's bit for bit did not run in bf16 at all
    assert any(not torch.equal(fast[n], g) for n, g in ref.items()), "fast gradients are fp32's: no bf16 ran"
    scale = max(g.norm().item() for g in ref.values())
    bad = []
    for n, g in ref.items():
        err = (fast[n] - g).norm().item()
        if err > REL_TOL * g.norm().item() + ABS_TOL * scale:
            bad.append(f"{n}: rel. error {err / max(g.norm().item(), 1e-30):.3f}")
    return bad



@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list_models())
def test_fast_path_gradients_match_fp32(name: str, device: str, bf16_on_cpu: None) -> None:
    dev = torch.device(device)
    assert loop.autocast_enabled(dev, True), "the comparison must really run the fast path in bf16"
    assert gradient_mismatches(name, dev) == []


def test_check_catches_a_wrong_gradient(bf16_on_cpu: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison itself can fail: a 10 % error in one small parameter's gradient is caught."""
    orig = loop.forward_loss

    def skewed(model, loss_fn, x, y, device, fast):
        loss = orig(model, loss_fn, x, y, device, fast)
        if fast:
            w = model.translator.blocks[0].attn.attn.conv_spatial.weight
            w.register_hook(lambda g: g * 1.1)
        return loss

    monkeypatch.setattr(loop, "forward_loss", skewed)
    bad = gradient_mismatches("conv_tau", torch.device("cpu"))
    assert [b.split(":")[0] for b in bad] == ["translator.blocks.0.attn.attn.conv_spatial.weight"]


@pytest.fixture
def fp32_cpu(monkeypatch: pytest.MonkeyPatch):
    """A CPU without native bf16: the fast path there is fp32 with channels_last."""
    monkeypatch.setenv("MMTUNE_CPU_BF16", "0")
    loop.cpu_bf16_supported.cache_clear()
    yield
    loop.cpu_bf16_supported.cache_clear()


@pytest.mark.parametrize("name", list_models())
def test_fp32_cpu_fast_path_is_channels_last_with_fp32_gradients(name: str, fp32_cpu: None) -> None:
    """Without bf16 the CPU fast path lays the model out channels_last where its entry asks; its
    gradients must be eager NCHW fp32's up to float rounding."""
    cpu = torch.device("cpu")
    assert not loop.autocast_enabled(cpu, True)
    torch.manual_seed(0)
    model = get_model(name, make_model_config(name, preset="small"))
    net = loop.prepare_model(copy.deepcopy(model), name, cpu, True, compile=False)
    weights = [p for p in net.parameters() if p.dim() == 4]
    if get_entry(name).channels_last and weights:
        assert all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
    clip = torch.rand(4, 20, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    batch = (clip[:, :10], clip[:, 10:])
    ref, fast = fast_path_gradients(model, name, cpu, False, batch), fast_path_gradients(model, name, cpu, True, batch)
    scale = max(g.norm().item() for g in ref.values())
    for n, g in ref.items():
        assert (fast[n] - g).norm().item() <= 1e-4 * g.norm().item() + 1e-7 * scale, n


def test_simple_lstm_recurrence_stays_fp32_under_autocast(bf16_on_cpu: None) -> None:
    """The LSTM of simple_lstm runs in fp32 inside the fast path's bf16 autocast, while its dense
    layers run in bf16. On an H200, cuDNN's bf16 LSTM put the gradients 12-28 % off fp32's, and
    test_fast_path_gradients_match_fp32[simple_lstm-cuda] failed (scripts/gpu_lstm_diag.py); this
    checks the same decision on the CPU, where no GPU is needed to see it."""
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    net = loop.prepare_model(get_model("simple_lstm", make_model_config("simple_lstm", preset="small")),
                             "simple_lstm", cpu, True, compile=False)
    seen: dict[str, torch.dtype] = {}
    net.lstm.register_forward_hook(lambda _m, _i, out: seen.update(lstm=out[0].dtype))  # returns None
    net.encoder.register_forward_hook(lambda _m, _i, out: seen.update(encoder=out.dtype))
    clip = torch.rand(2, 20, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    loop.forward_loss(net, VideoLoss(0.0), clip[:, :10], clip[:, 10:], cpu, True).backward()
    assert seen == {"encoder": torch.bfloat16, "lstm": torch.float32}


def test_the_fast_path_is_off_on_cuda_where_the_model_entry_says_it_does_not_pay() -> None:
    """simple_lstm's entry turns the fast path off on CUDA (slower with it on an H200); the conv models
    keep it, and on a CPU every model keeps what it asks for."""
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert not get_entry("simple_lstm").cuda_fast
    assert not loop.fast_path("simple_lstm", cuda, True)
    assert loop.fast_path("conv_tau", cuda, True) and loop.fast_path("conv_lstm", cuda, True)
    assert loop.fast_path("simple_lstm", cpu, True)
    assert not loop.fast_path("conv_tau", cuda, False)
    # what the trial and the bench's "fast" variant build: no compile for simple_lstm on CUDA
    assert not loop.compile_enabled(cuda, loop.fast_path("simple_lstm", cuda, True))
