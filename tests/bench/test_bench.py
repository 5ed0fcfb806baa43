"""The fast path's numerics and the `mmtune bench` command (CPU).

The CUDA fast path (bf16 autocast, channels_last, compile, fused AdamW, data on the GPU) cannot
run here, so its numerics are checked piece by piece on CPU: the loop's own autocast is forced on
for a forward pass (MMTUNE_CPU_BF16=1, so also on CPUs without native bf16), channels_last is
applied to the CPU model. The 1-epoch val MSE check runs the real `fast=True` Trainer, which on
CPU trains in bf16 autocast, against fp32 eager. Gradients: tests/training/test_fast_path.py.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from mmtune.bench import BenchResult, count_train_flops, size_config, write_json, write_markdown
from mmtune.bench.bench import BenchConfig
from mmtune.errors import MMTuneError
from mmtune.metrics import VideoLoss
from mmtune.models import get_model, list_models
from mmtune.training import loop
from mmtune.training.config import TrainConfig, build_trial
from mmtune.training.cost import _conv_backward_flop
from mmtune.training.loop import Trainer, prepare_model, resolve_device

# bf16 keeps 8 bits of mantissa (relative error 2^-8 ≈ 0.004 per rounding); after a few
# layers the outputs of an untrained model differ by ~1e-3 on average.
BF16_MAX_ABS = 0.03
BF16_MEAN_ABS = 0.005



def _inputs(batch: int = 4):
    gen = torch.Generator().manual_seed(1)
    return torch.rand(batch, 10, 1, 64, 64, generator=gen), torch.rand(batch, 10, 1, 64, 64, generator=gen)


@pytest.mark.parametrize("model", list_models())
def test_bf16_autocast_matches_fp32_on_the_same_weights(model, bf16_on_cpu):
    torch.manual_seed(0)
    net = get_model(model, size_config(model, "small")).eval()
    x, y = _inputs()
    loss_fn = VideoLoss(kl_weight=0.1)
    cpu = torch.device("cpu")
    with torch.no_grad():
        ref = net(x)
        with loop._autocast(cpu, True):  # the training loop's own autocast
            low = net(x)
        assert low.dtype == torch.bfloat16, "the fast path must really run in bf16"
        low = low.float()
        ref_loss, _ = loss_fn(ref, y)
        low_loss, _ = loss_fn(low, y)
    diff = (ref - low).abs()
    assert diff.max().item() < BF16_MAX_ABS, f"{model}: max |fp32 - bf16| = {diff.max().item():.4f}"
    assert diff.mean().item() < BF16_MEAN_ABS, f"{model}: mean |fp32 - bf16| = {diff.mean().item():.5f}"
    assert math.isclose(ref_loss.item(), low_loss.item(), rel_tol=0.02)


@pytest.mark.parametrize("model", list_models())
def test_channels_last_keeps_outputs(model):
    torch.manual_seed(0)
    eager = get_model(model, size_config(model, "small")).eval()
    torch.manual_seed(0)
    nhwc = prepare_model(get_model(model, size_config(model, "small")), model, torch.device("cpu"), True,
                         channels_last=True, compile=False).eval()
    x, _ = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(nhwc(x), eager(x), rtol=1e-4, atol=1e-5)


def test_compiled_model_keeps_checkpoint_keys(monkeypatch, tmp_path):
    """A trial compiled for real (MMTUNE_COMPILE=1: inductor builds C++ kernels, about 30 s on one CPU
    core) keeps the eager model's state_dict keys, and its checkpoint, written and read back by
    mmtune's own checkpoint code, loads strictly into an eager model that then predicts the same
    frames. `torch.compile(model)` instead of the in-place `model.compile()` would prefix every key
    with `_orig_mod.` and break every checkpoint."""
    from mmtune.training.checkpoint import load_checkpoint, save_checkpoint

    monkeypatch.setenv("MMTUNE_COMPILE", "1")
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    trial = build_trial("conv_tau", "small", model_overrides={"hid_S": 8, "N_S": 2, "hid_T": 16, "N_T": 1},
                        train_overrides={"device": "cpu", "fast": True},
                        data_overrides={"train_size": 2, "val_size": 1, "test_size": 1})
    trainer = Trainer(trial, progress=False)
    net = trainer.model.eval()
    x = torch.rand(1, 10, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = net(x)
    assert torch._dynamo.utils.counters["stats"]["calls_captured"] > 0  # dynamo traced the forward...
    assert torch._dynamo.utils.counters["inductor"], "inductor did not compile the graph"  # ...and inductor built it
    eager = get_model("conv_tau", trial.model_cfg).eval()
    assert list(net.state_dict()) == list(eager.state_dict())
    path = save_checkpoint(trainer.state_dict(optimizer=False), tmp_path / "last.pt")
    eager.load_state_dict(load_checkpoint(path)["model"], strict=True)
    with torch.no_grad():
        torch.testing.assert_close(eager(x), out, rtol=1e-4, atol=1e-5)


def test_cpu_fast_path_neither_compiles_nor_changes_layout_with_bf16(monkeypatch, bf16_on_cpu):
    """With bf16 the CPU fast path keeps NCHW (bf16 + channels_last computes wrong gradients) and never
    compiles; without bf16 it is fp32 with channels_last (tests/training/test_fast_path.py)."""
    monkeypatch.delenv("MMTUNE_COMPILE", raising=False)
    cfg = size_config("conv_tau", "small")
    net = prepare_model(get_model("conv_tau", cfg), "conv_tau", torch.device("cpu"), True)
    assert getattr(net, "_compiled_call_impl", None) is None
    assert all(p.is_contiguous() for p in net.parameters())


def test_fast_val_mse_within_2_percent_of_eager_after_one_epoch(bf16_on_cpu):
    """The fast Trainer really trains and validates in bf16 (so its run differs from eager's), and
    still lands within 2 % of eager: a fast path that silently ran fp32 would pass the 2 % alone."""
    torch.set_num_threads(1)
    device = resolve_device("auto")
    data = {"train_size": 64, "val_size": 16, "test_size": 8}
    mse, seen = {}, {}
    for fast in (True, False):
        trial = build_trial("conv_tau", "small", train_overrides={"epochs": 1, "batch_size": 16, "fast": fast},
                            data_overrides=data)
        trainer = Trainer(trial, progress=False)
        dtypes: set[tuple[bool, torch.dtype]] = set()
        trainer.model.register_forward_hook(lambda m, _inp, out, d=dtypes: d.add((m.training, out.dtype)))
        mse[fast] = trainer.fit().history[0].val_mse
        seen[fast] = dtypes
    # (training?, output dtype) of every forward: the training steps and the validation
    assert seen[True] == {(True, torch.bfloat16), (False, torch.bfloat16)}, seen[True]
    assert seen[False] == {(True, torch.float32), (False, torch.float32)}, seen[False]
    assert mse[True] != mse[False], "the fast run equals the eager one bit for bit: no bf16 ran"
    assert abs(mse[True] - mse[False]) <= 0.02 * mse[False], f"{device}: fast {mse[True]} vs eager {mse[False]}"


@pytest.mark.parametrize("model", list_models())
def test_flop_count_is_positive_and_grows_with_size(model):
    small = count_train_flops(model, size_config(model, "small"), batch=1)
    default = count_train_flops(model, size_config(model, "default"), batch=1)
    assert 0 < small < default


def test_grouped_conv_weight_gradient_is_not_overcounted():
    # a depth-wise 3x3 conv, 8 channels, 4x4 output, batch 1: 2 * 9 * 16 * 8 FLOPs each for
    # the input and the weight gradient (torch itself counts the weight gradient 8x)
    conv = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
    x = torch.rand(1, 8, 4, 4, requires_grad=True)
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False, custom_mapping={
        torch.ops.aten.convolution_backward: _conv_backward_flop})
    with counter:
        conv(x).sum().backward()
    assert counter.get_total_flops() == 3 * 2 * 9 * 16 * 8


def test_bench_config_rejects_bad_values():
    with pytest.raises(MMTuneError, match="sizes"):
        BenchConfig(sizes=("huge",))
    with pytest.raises(MMTuneError, match="pack"):
        BenchConfig(pack=(0,))
    with pytest.raises(MMTuneError, match="variants"):
        BenchConfig(variants=("turbo",))


def _fake_result(device: str, date: str) -> BenchResult:
    hw = {"cpu": "Test CPU", "cores": 2, "memory_gb": 1.0, "gpu": None, "load_avg_at_start": [0.0, 0.0, 0.0],
          "versions": {"python": "3", "torch": "2", "numpy": "1", "cuda": None, "cudnn": None}}
    meta = {"date": date, "command": "mmtune bench", "device": device, "hardware": hw, "bf16_peak_tflops": None,
            "fast_path": {"compile": False}, "total_seconds": 1.0, "load_avg_at_end": [0.0, 0.0, 0.0]}
    gen = {"sequences": 10, "min_s": 0.1, "median_s": 0.1, "seconds": [0.1], "sequences_per_s": 100.0}
    return BenchResult(meta, models=[], pack={}, generation=gen)


def test_markdown_section_is_replaced_and_the_rest_kept(tmp_path):
    path = tmp_path / "benchmarks.md"
    path.write_text("# Benchmarks\n\nHand-written notes.\n")
    write_markdown(_fake_result("cpu", "first"), path)
    write_markdown(_fake_result("cuda", "gpu-run"), path)
    write_markdown(_fake_result("cpu", "second"), path)
    text = path.read_text()
    assert "Hand-written notes." in text and "gpu-run" in text and "second" in text
    assert "first" not in text
    assert text.count("mmtune-bench:cpu:begin") == 1


@pytest.mark.parametrize("variant", ["eager", "fast"])
def test_bench_steps_with_the_optimizer_a_trial_builds(variant):
    """The bench times the optimizer a trial really trains with: the one `Trainer` builds for the same
    model and a trial at the bench's lr (1e-4, not TrainConfig's 1e-3) and fast setting. Class, every
    default (betas, eps, weight decay, amsgrad, fused, foreach...) and the parameters it steps, by name,
    must match, so a bench that built its own optimizer, or ignored the trial's lr, is caught."""
    from mmtune.bench.bench import VARIANTS, _setup_trial

    fast = VARIANTS[variant]["fast"]
    trial = build_trial("conv_lstm", "small", train_overrides={"lr": 1e-4, "fast": fast, "device": "cpu"},
                        data_overrides={"train_size": 4, "val_size": 2, "test_size": 2})
    assert trial.model_cfg == size_config("conv_lstm", "small")  # the bench's model is the trial's
    real = Trainer(trial, progress=False)
    net, opt, *_ = _setup_trial("conv_lstm", trial.model_cfg, variant, torch.device("cpu"), 2, 4)
    assert type(opt) is type(real.optimizer)
    assert opt.defaults == real.optimizer.defaults
    assert opt.defaults["lr"] == 1e-4 != TrainConfig().lr

    def stepped(o, model):
        names = {id(p): n for n, p in model.named_parameters()}
        return [[names[id(p)] for p in group["params"]] for group in o.param_groups]

    assert stepped(opt, net) == stepped(real.optimizer, real.model)
    assert len(stepped(opt, net)[0]) == len(list(net.parameters()))


def test_json_and_markdown_are_written_atomically(tmp_path, monkeypatch):
    js, md = tmp_path / "bench.json", tmp_path / "bench.md"
    result = _fake_result("cpu", "first")
    result.generation["min_s"] = math.nan
    write_json(result, js)
    write_markdown(result, md)
    data = json.loads(js.read_text())  # standard JSON: NaN written as null, keys in the result's order
    assert data["generation"]["min_s"] is None and list(data) == ["meta", "models", "pack", "generation"]
    before = (js.read_bytes(), md.read_bytes())

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("mmtune._io.os.replace", crash)  # a write that dies before the rename
    for write, path in ((write_json, js), (write_markdown, md)):
        with pytest.raises(OSError, match="disk full"):
            write(_fake_result("cpu", "second"), path)
    assert (js.read_bytes(), md.read_bytes()) == before  # the old files are whole, not half new


def test_bench_tiny_runs_on_cpu_and_writes_json_and_markdown(tmp_path):
    out, js = tmp_path / "bench.md", tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "mmtune.cli", "bench", "--tiny", "--device", "cpu", "--out", str(out),
         "--json", str(js)],
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[bench]" in proc.stderr  # progress lines
    data = json.loads(js.read_text())
    assert data["meta"]["device"] == "cpu" and data["meta"]["hardware"]["gpu"] is None
    assert data["meta"]["complete"] is True and not (tmp_path / "bench.partial.json").exists()
    assert {r["model"] for r in data["models"]} == set(list_models())
    for row in data["models"]:
        assert row["flops_per_sample"] > 0 and row["peak_rss_mb"] > 0
        assert {v["variant"] for v in row["variants"]} == {"eager", "fast"}
        assert all(v["samples_per_s"] > 0 for v in row["variants"])
    assert [r["k"] for r in data["pack"]["runs"]] == [1, 2]
    assert data["generation"]["sequences"] == 10_000 and data["generation"]["min_s"] > 0
    text = out.read_text()
    assert "**Hardware:**" in text and "no GPU" in text and "mmtune bench --tiny" in text


def test_a_bench_cut_short_keeps_its_figures_beside_an_earlier_result(tmp_path, monkeypatch):
    """Killed in the packing (as the H200 run was, by its timeout), the bench leaves the model
    rows it measured in STEM.partial.json, marked incomplete, and the earlier JSON untouched."""
    import argparse

    from mmtune.bench import bench as bench_mod
    from mmtune.cli import bench as bench_cli

    out, js = tmp_path / "bench.md", tmp_path / "bench.json"
    js.write_text('{"earlier": true}\n')

    def killed(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(bench_mod, "_time_packing", killed)
    parser = argparse.ArgumentParser()
    bench_cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["bench", "--tiny", "--device", "cpu", "--models", "simple_lstm",
                              "--out", str(out), "--json", str(js)])
    with pytest.raises(KeyboardInterrupt):
        bench_cli.run(args)
    part = json.loads((tmp_path / "bench.partial.json").read_text())
    assert part["meta"]["complete"] is False and part["generation"]["min_s"] > 0
    assert [r["model"] for r in part["models"]] == ["simple_lstm"]
    assert all(v["samples_per_s"] > 0 for v in part["models"][0]["variants"])
    assert json.loads(js.read_text()) == {"earlier": True} and not out.exists()


def test_bench_bad_flag_is_one_line_and_exit_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "mmtune.cli", "bench", "--sizes", "huge", "--out", str(tmp_path / "b.md")],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "sizes" in proc.stderr
