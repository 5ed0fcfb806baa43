"""The shared training loop: resume equality, learning, divergence, the train command."""

from __future__ import annotations

import json
import math

import pytest
import torch

from mmtune.cli import main
from mmtune.errors import MMTuneError
from mmtune.models import list_models
from mmtune.training.config import TrainConfig, build_trial
from mmtune.training.loop import Trainer, resolve_device

TINY_DATA = {"train_size": 16, "val_size": 8, "test_size": 8}


def _trial(model: str, epochs: int, **train):
    return build_trial(model, "small", train_overrides={"epochs": epochs, "batch_size": 8, **train},
                       data_overrides=TINY_DATA)


@pytest.mark.parametrize("model", list_models())
def test_resume_continues_identically(model, tmp_path):
    torch.set_num_threads(1)
    straight = Trainer(_trial(model, 2), progress=False)
    straight.fit()

    first = Trainer(_trial(model, 2), progress=False)
    first.fit(on_epoch=lambda r, tr: tr.save(tmp_path / "ck.pt") if r.epoch == 1 else None)
    resumed = Trainer(_trial(model, 2), progress=False)
    resumed.resume(tmp_path / "ck.pt")
    assert resumed.epoch == 1
    resumed.fit()

    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), f"{model}: parameter {name} differs after resume"
    assert straight.history[-1].val == resumed.history[-1].val


@pytest.mark.parametrize("model", list_models())
def test_tiny_run_learns(model):
    torch.set_num_threads(1)
    trial = build_trial(model, "small", train_overrides={"epochs": 4, "batch_size": 8, "lr": 3e-3},
                        data_overrides={"train_size": 64, "val_size": 16, "test_size": 8})
    fit = Trainer(trial, progress=False).fit()
    assert fit.status == "completed"
    first, last = fit.history[0].val_mse, min(r.val_mse for r in fit.history[1:])
    assert last < first, f"{model}: val mse_frame did not drop ({[r.val_mse for r in fit.history]})"


def test_nan_loss_ends_with_diverged_status(monkeypatch):
    trainer = Trainer(_trial("conv_lstm", 3), progress=False)
    calls = {"n": 0}

    def nan_loss(pred, true):
        calls["n"] += 1
        return pred.sum() * math.nan, {"mse": math.nan, "kl": 0.0}

    monkeypatch.setattr(trainer, "loss_fn", nan_loss)
    fit = trainer.fit()
    assert fit.status == "diverged" and "NaN" in fit.message
    assert len(fit.history) == 1 and fit.history[0].status == "diverged"
    assert calls["n"] == 1  # stopped at the first non-finite loss


def test_checkpoint_carries_config(tmp_path):
    trainer = Trainer(_trial("simple_lstm", 1), progress=False)
    trainer.fit()
    path = trainer.save(tmp_path / "c.pt")
    state = torch.load(path, weights_only=False)
    assert state["trial"] == trainer.trial.to_dict()
    assert {"model", "optimizer", "scheduler", "epoch", "rng_cpu"} <= set(state)


def test_corrupt_checkpoint_is_reported(tmp_path):
    trainer = Trainer(_trial("simple_lstm", 1), progress=False)
    path = trainer.save(tmp_path / "c.pt")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(MMTuneError, match="corrupt"):
        trainer.resume(path)


def test_device_detection():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(MMTuneError, match="no CUDA GPU"):
            resolve_device("cuda")


@pytest.mark.parametrize(
    "kwargs, field",
    [({"epochs": 0}, "epochs"), ({"lr": -1.0}, "lr"), ({"optimizer": "lion"}, "optimizer"),
     ({"scheduler": "step"}, "scheduler"), ({"kl_weight": -0.1}, "kl_weight")],
)
def test_bad_train_config(kwargs, field):
    with pytest.raises(MMTuneError, match=field):
        TrainConfig(**kwargs)


def test_kl_weight_defaults_per_model():
    assert build_trial("conv_tau").kl_weight == pytest.approx(0.1)
    assert build_trial("conv_lstm").kl_weight == 0.0
    assert build_trial("conv_tau", "seed2023").kl_weight == pytest.approx(0.5)
    seed = build_trial("conv_tau", "seed2023")
    assert (seed.train.lr, seed.train.weight_decay, seed.train.batch_size) == (0.01, 0.05, 16)


def test_malformed_test_file_fails_before_training(tmp_path, capsys):
    import numpy as np

    bad = tmp_path / "mnist_test_seq.npy"
    np.save(bad, np.zeros((10, 2, 64, 64), np.uint8))  # frames axis must be 20
    assert main(["train", "--model", "conv_lstm", "--preset", "small", "--test-file", str(bad),
                 "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert "must be uint8 of shape (20, N, 64, 64)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_train_command_writes_metrics_and_strip(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--model", "conv_tau", "--preset", "small", "--epochs", "1", "--train-size", "16",
               "--val-size", "8", "--test-size", "8", "--batch-size", "8", "--out", str(out), "--quiet"])
    assert rc == 0
    metrics = json.loads((out / "test_metrics.json").read_text())
    assert metrics["status"] == "completed"
    assert set(metrics["test"]) >= {"mse_frame", "mse_pixel255", "ssim", "psnr", "mae_frame"}
    assert len(metrics["test"]["mse_frame_per_step"]) == 10
    assert metrics["test"]["mse_pixel255"] == pytest.approx(metrics["test"]["mse_frame"] * 65025 / 4096, rel=1e-4)
    assert (out / "strip.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    captured = capsys.readouterr()
    assert "test mse_frame" in captured.out
    # the baselines of both evaluated splits, and the model set beside the best one
    base = metrics["baselines"]
    assert set(base["splits"]) == {"val", "test"} and base["splits"]["test"]["size"] == 8
    test_base = base["splits"]["test"]["metrics"]
    assert set(test_base) == {"blank", "mean_frame", "last_frame", "input_mean"}
    best = min(test_base, key=lambda k: test_base[k]["mse_frame"])
    vs = metrics["vs_best_baseline"]
    assert vs["baseline"] == best
    assert vs["ratio"] == pytest.approx(metrics["test"]["mse_frame"] / test_base[best]["mse_frame"])
    assert "the best baseline" in captured.err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--model", "transformer"], "unknown model 'transformer'"),
        (["train", "--model", "conv_lstm", "--set", "kernel_size=4"], "kernel_size"),
        (["train", "--model", "conv_tau", "--set", "N_S=3"], "N_S"),
        (["train", "--model", "conv_tau", "--preset", "huge"], "unknown preset"),
        (["train", "--train-size", "lots"], "--train-size"),
        (["train", "--model", "conv_lstm", "--set", "bogus=1"], "bogus"),
        (["train", "--test-file", "/nonexistent/mnist_test_seq.npy"], "does not exist"),
    ],
)
def test_train_command_bad_input_is_one_line(argv, message, capsys, tmp_path):
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()  # nothing written before the error
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
