"""The shared training loop: resume equality, learning, divergence, the train command."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys

import pytest
import torch

from mmtune.cli import main
from mmtune.errors import MMTuneError
from mmtune.experiment import TestResult, TrainRecord, read_baselines, read_test_metrics, read_train_record
from mmtune.models import list_models
from mmtune.training.checkpoint import load_checkpoint
from mmtune.training.config import TrainConfig, build_trial
from mmtune.training.loop import Trainer, resolve_device
from mmtune.training.run import TrainResult

TINY_DATA = {"train_size": 16, "val_size": 8, "test_size": 8}
# The same run from the command line (simple_lstm: a 1-epoch run takes a second).
TINY_ARGS = ["--preset", "small", "--epochs", "1", "--batch-size", "8", "--train-size", "16", "--val-size", "8",
             "--test-size", "8", "--device", "cpu", "--quiet"]


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
    state = torch.load(path, weights_only=True)
    assert state["trial"] == trainer.trial.to_dict()
    assert json.loads(json.dumps(state["trial"])) == state["trial"]  # the config is JSON-able data
    assert {"model", "optimizer", "scheduler", "epoch", "rng_cpu"} <= set(state)
    assert isinstance(state["rng_cpu"], torch.Tensor)


@pytest.mark.parametrize("optimizer, scheduler", [("adamw", "onecycle"), ("adam", "cosine"), ("sgd", "constant")])
def test_every_checkpoint_is_plain_data(optimizer, scheduler, tmp_path):
    """What mmtune writes loads under torch's weights-only unpickler, optimizer and scheduler state included."""
    trainer = Trainer(_trial("simple_lstm", 2, optimizer=optimizer, scheduler=scheduler), progress=False)
    trainer.fit(on_epoch=lambda r, tr: tr.save(tmp_path / "c.pt") if r.epoch == 1 else None)
    state = torch.load(tmp_path / "c.pt", weights_only=True)
    assert state["optimizer"]["state"] and state["scheduler"]["last_epoch"] > 0
    resumed = Trainer(_trial("simple_lstm", 2, optimizer=optimizer, scheduler=scheduler), progress=False)
    resumed.resume(tmp_path / "c.pt")
    assert resumed.epoch == 1 and resumed.scheduler.last_epoch == state["scheduler"]["last_epoch"]


class _WritesAFile:
    """A crafted checkpoint value: unpickling it opens (creates) a file, standing in for any command."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _crafted_checkpoint(path, marker):
    """A .pt whose `model` entry runs code on an unrestricted load, with a matching sha256 sidecar."""
    import hashlib

    torch.save({"trial": _trial("simple_lstm", 1).to_dict(), "model": _WritesAFile(marker), "epoch": 0}, path)
    path.with_name(path.name + ".sha256").write_text(hashlib.sha256(path.read_bytes()).hexdigest() + "\n")
    return path


def test_crafted_checkpoint_runs_nothing_on_load(tmp_path):
    marker = tmp_path / "marker"
    path = _crafted_checkpoint(tmp_path / "evil.pt", marker)
    try:
        load_checkpoint(path)
        error = ""
    except MMTuneError as exc:
        error = str(exc)
    assert not marker.exists(), "loading the checkpoint ran the code it carries"
    assert f"checkpoint {path} holds objects that are not plain data (io.open); mmtune refuses" in error


def test_train_resume_of_crafted_checkpoint_runs_nothing(tmp_path, capsys):
    marker = tmp_path / "marker"
    path = _crafted_checkpoint(tmp_path / "evil.pt", marker)
    rc = main(["train", "--model", "simple_lstm", *TINY_ARGS, "--resume", str(path), "--out", str(tmp_path / "out")])
    assert not marker.exists(), "mmtune train --resume ran the code the checkpoint carries"
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "not plain data (io.open)" in err, err
    assert not (tmp_path / "out").exists()


def test_truncated_checkpoint_is_one_error(tmp_path):
    trainer = Trainer(_trial("simple_lstm", 1), progress=False)
    path = trainer.save(tmp_path / "c.pt")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(MMTuneError, match="is corrupt \\(sha256 mismatch\\)"):  # the sidecar catches it
        load_checkpoint(path)
    path.with_name("c.pt.sha256").unlink()  # a file shared without its sidecar
    with pytest.raises(MMTuneError, match="cannot be read"):
        load_checkpoint(path)


def test_corrupt_checkpoint_is_reported(tmp_path):
    trainer = Trainer(_trial("simple_lstm", 1), progress=False)
    path = trainer.save(tmp_path / "c.pt")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(MMTuneError, match="corrupt"):
        trainer.resume(path)


@pytest.mark.parametrize("cuda", [True, False])
def test_auto_picks_cuda_before_cpu_and_cuda_without_a_gpu_is_one_line(monkeypatch, cuda: bool):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert resolve_device("auto") == torch.device("cuda" if cuda else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    if not cuda:
        with pytest.raises(MMTuneError, match="no CUDA GPU is visible; use --device cpu"):
            resolve_device("cuda")


@pytest.mark.parametrize(
    "kwargs, field",
    [({"epochs": 0}, "epochs"), ({"lr": -1.0}, "lr"), ({"optimizer": "lion"}, "optimizer"),
     ({"scheduler": "step"}, "scheduler"), ({"kl_weight": -0.1}, "kl_weight"),
     ({"time_budget_s": 0}, "time_budget_s"), ({"time_budget_s": math.inf}, "time_budget_s")],
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
    assert read_train_record(out).status == "completed"
    tested = read_test_metrics(out)["conv_tau"]  # the sweep's schema, with one family
    test = tested.test
    assert set(test) >= {"mse_frame", "mse_pixel255", "ssim", "psnr", "mae_frame"}
    assert len(test["mse_frame_per_step"]) == 10 and tested.test_size == 8 and tested.checkpoint == "best.pt"
    assert test["mse_pixel255"] == pytest.approx(test["mse_frame"] * 65025 / 4096, rel=1e-4)
    history = json.loads((out / "history.json").read_text())
    assert tested.epoch == 1 and tested.val_mse == pytest.approx(history[0]["val"]["mse_frame"])
    assert (out / "strip.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    captured = capsys.readouterr()
    assert "test mse_frame" in captured.out
    # the baselines of both evaluated splits, and the model set beside the best one
    base = read_baselines(out)
    assert set(base.splits) == {"val", "test"} and base.splits["test"].size == 8
    test_base = base.splits["test"].metrics
    assert set(test_base) == {"blank", "mean_frame", "last_frame", "input_mean"}
    best = min(test_base, key=lambda k: test_base[k]["mse_frame"])
    vs = tested.vs_best_baseline
    assert vs is not None and vs["baseline"] == best
    assert vs["ratio"] == pytest.approx(test["mse_frame"] / test_base[best]["mse_frame"])
    assert "the best baseline" in captured.out and "ssim" in captured.out  # the one result line


def test_a_plugin_model_trains_through_the_real_cli(tmp_path):
    """The `toy` model of tests/plugins/mmtune_toy_plugin (an entry point, not an mmtune module)."""
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "mmtune.cli", "train", "--model", "toy", "--set", "kernel_size=5", "--epochs", "1",
         "--train-size", "32", "--val-size", "8", "--test-size", "8", "--batch-size", "8", "--device", "cpu",
         "--quiet", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "toy: " in proc.stdout and "test mse_frame" in proc.stdout
    record = read_train_record(out)
    assert record.status == "completed" and record.model == "toy"
    assert record.config["model_cfg"]["kernel_size"] == 5 and math.isfinite(read_test_metrics(out)["toy"].test["mse_frame"])
    state = load_checkpoint(out / "last.pt")
    assert state["trial"]["model"] == "toy" and "conv1.weight" in state["model"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--model", "transformer"], "unknown model 'transformer'"),
        (["train", "--model", "conv_lstm", "--set", "kernel_size=4"], "kernel_size"),
        (["train", "--model", "conv_tau", "--set", "N_S=3"], "N_S"),
        (["train", "--model", "conv_tau", "--set", "N_S=1000"], "N_S must be at most 12 for 64x64 frames (each "
                                                                "second layer halves H and W), got 1000"),
        (["train", "--model", "conv_tau", "--preset", "huge"], "unknown preset"),
        (["train", "--train-size", "lots"], "--train-size"),
        (["train", "--model", "conv_lstm", "--set", "bogus=1"], "bogus"),
        (["train", "--test-file", "/nonexistent/mnist_test_seq.npy"], "does not exist"),
        (["train", "--protocol", "openstl"], "unknown protocol 'openstl'"),
    ],
)
def test_train_command_bad_input_is_one_line(argv, message, capsys, tmp_path):
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()  # nothing written before the error
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A real 1-epoch `mmtune train` run of simple_lstm: its folder holds last.pt and best.pt."""
    out = tmp_path_factory.mktemp("run") / "a"
    assert main(["train", "--model", "simple_lstm", *TINY_ARGS, "--out", str(out)]) == 0
    return out


def test_finished_run_keeps_no_optimizer_state(finished_run, tmp_path):
    for name in ("best.pt", "last.pt"):  # best.pt is read back for the test split only; last.pt is of epoch 1 of 1
        state = torch.load(finished_run / name, weights_only=True)
        assert "optimizer" not in state and "scheduler" not in state and state["epoch"] == 1
    # Resuming the finished run trains nothing and gives the same test metrics.
    assert main(["train", "--model", "simple_lstm", *TINY_ARGS, "--resume", str(finished_run / "last.pt"),
                 "--out", str(tmp_path / "again")]) == 0
    first = read_test_metrics(finished_run)["simple_lstm"].test
    assert read_test_metrics(tmp_path / "again")["simple_lstm"].test == first
    assert json.loads((tmp_path / "again" / "history.json").read_text()) == []


def test_weights_only_checkpoint_cannot_be_continued(tmp_path, capsys):
    trainer = Trainer(_trial("simple_lstm", 2), progress=False)
    trainer.fit(on_epoch=lambda r, tr: tr.save(tmp_path / "best.pt", optimizer=False) if r.epoch == 1 else None)
    argv = ["train", "--model", "simple_lstm", *TINY_ARGS, "--epochs", "2", "--resume", str(tmp_path / "best.pt"),
            "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds the weights only (epoch 1 of 2" in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "conv_lstm"], "checkpoint was trained with model simple_lstm, this run asks for conv_lstm; "
                                   "mismatched (checkpoint vs this run): model"),
        (["--set", "hidden=32"], "mismatched (checkpoint vs this run): model_cfg.hidden (64 vs 32)"),
        (["--train-size", "32"], "mismatched (checkpoint vs this run): data.train_size (16 vs 32)"),
        (["--num-digits", "1", "--seed", "3"], "train.seed (0 vs 3), data.num_digits (2 vs 1), data.seed (0 vs 3)"),
        (["--lr", "0.01"], "mismatched (checkpoint vs this run): train.lr (0.001 vs 0.01)"),
        (["--epochs", "3"], "--epochs 3 differs from the checkpoint's 1: the onecycle schedule was planned for 1 "
                            "epochs; start a new run, or resume with --epochs 1"),
    ],
)
def test_mismatched_resume_is_one_line_and_writes_nothing(argv, message, finished_run, tmp_path, capsys):
    out = tmp_path / "out"
    model = argv[1] if argv[0] == "--model" else "simple_lstm"
    extra = argv[2:] if argv[0] == "--model" else argv
    before = {p.name: p.stat().st_mtime_ns for p in finished_run.iterdir()}
    assert main(["train", "--model", model, *TINY_ARGS, *extra, "--resume", str(finished_run / "last.pt"),
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"mmtune: error: --resume {finished_run / 'last.pt'}: ") and message in err, err
    assert not out.exists()
    assert {p.name: p.stat().st_mtime_ns for p in finished_run.iterdir()} == before


# -- an --out holding another run's results -----------------------------------------------------

RESULTS = ("test_metrics.json", "baselines.json", "train.json", "history.json", "last.pt", "best.pt", "strip.png")
NAMED = ", ".join(RESULTS)


def _snapshot(folder):
    """Every file of `folder`: its bytes and mtime, to show nothing was written or removed."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def _one_line(capsys):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("name", RESULTS)
def test_an_out_holding_any_result_of_another_run_is_refused(name, finished_run, tmp_path, capsys):
    out = tmp_path / "earlier"
    out.mkdir()
    shutil.copy2(finished_run / name, out / name)
    (out / "notes.txt").write_text("mine\n")
    before = _snapshot(out)
    assert main(["train", "--model", "simple_lstm", *TINY_ARGS, "--out", str(out)]) == 2
    resume = f"continue that run with --resume {out / 'last.pt'}, " if name == "last.pt" else ""
    assert _one_line(capsys) == (f"mmtune: error: --out {out} holds the results of another run ({name}); "
                                 f"give another --out, {resume}or replace them with --overwrite")
    assert _snapshot(out) == before  # nothing written, nothing removed


def test_a_finished_runs_folder_is_refused_naming_its_files(finished_run, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    before = _snapshot(out)
    # Another config, and the same one again: neither may replace the run without --overwrite.
    for extra in (["--seed", "1"], []):
        assert main(["train", "--model", "simple_lstm", *TINY_ARGS, *extra, "--out", str(out)]) == 2
        err = _one_line(capsys)
        assert f"({NAMED})" in err, err
        assert f"--resume {out / 'last.pt'}" in err and "--overwrite" in err, err
    assert _snapshot(out) == before


def test_an_out_that_is_a_file_is_refused(tmp_path, capsys):
    out = tmp_path / "taken"
    out.write_text("not a folder\n")
    assert main(["train", "--model", "simple_lstm", *TINY_ARGS, "--out", str(out)]) == 2
    assert _one_line(capsys) == f"mmtune: error: --out {out} is a file, not a folder; give another --out"
    assert out.read_text() == "not a folder\n"


def test_overwrite_replaces_the_earlier_run(finished_run, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    (out / "notes.txt").write_text("mine\n")
    assert main(["train", "--model", "simple_lstm", *TINY_ARGS, "--seed", "1", "--overwrite", "--out", str(out)]) == 0
    assert f"--overwrite: removing the earlier run's {NAMED} from {out}" in capsys.readouterr().err
    assert read_train_record(out).config["train"]["seed"] == 1
    assert [r["epoch"] for r in json.loads((out / "history.json").read_text())] == [1]
    for name in ("last.pt", "best.pt"):
        assert load_checkpoint(out / name)["trial"]["train"]["seed"] == 1
    assert (out / "strip.png").read_bytes() != (finished_run / "strip.png").read_bytes()
    assert (out / "notes.txt").read_text() == "mine\n"  # not a result of train's: kept


def test_overwrite_leaves_nothing_of_the_earlier_run(finished_run, tmp_path, monkeypatch):
    """A run that diverges writes no best.pt nor strip.png: the earlier run's are gone, not left beside it."""
    import mmtune.training.loop as loop

    class NaNLoss(torch.nn.Module):
        def __init__(self, kl_weight=0.0):
            super().__init__()

        def forward(self, pred, true):
            return pred.sum() * math.nan, {"mse": math.nan, "kl": 0.0}

    monkeypatch.setattr(loop, "VideoLoss", NaNLoss)
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    assert main(["train", "--model", "simple_lstm", *TINY_ARGS, "--overwrite", "--out", str(out)]) == 3
    assert sorted(os.listdir(out)) == ["baselines.json", "history.json", "last.pt", "last.pt.sha256",
                                       "test_metrics.json", "train.json"]
    assert read_train_record(out).status == "diverged"
    assert read_test_metrics(out)["simple_lstm"].error.startswith("not tested: diverged")


def test_resume_into_the_runs_own_folder_needs_no_overwrite(tmp_path, capsys):
    """A 2-epoch run stopped after epoch 1, continued where it lives."""
    out = tmp_path / "run"
    trainer = Trainer(_trial("simple_lstm", 2), progress=False)
    trainer.fit(on_epoch=lambda r, tr: tr.save(out / "last.pt") if r.epoch == 1 else None)
    assert main(["train", "--model", "simple_lstm", *TINY_ARGS, "--epochs", "2", "--resume", str(out / "last.pt"),
                 "--out", str(out)]) == 0
    assert "--overwrite" not in capsys.readouterr().err
    assert load_checkpoint(out / "last.pt")["epoch"] == 2
    assert [r["epoch"] for r in json.loads((out / "history.json").read_text())] == [2]
    assert read_train_record(out).status == "completed"


def test_a_crash_mid_write_leaves_the_old_file_whole(tmp_path, monkeypatch):
    """test_metrics.json, history.json and strip.png (checkpoints too: save_checkpoint) go through one
    atomic write: a write that dies part-way leaves the old bytes and no temp file."""
    import numpy as np

    from mmtune._io import write_json
    from mmtune.strips import save_strip

    frames = np.zeros((10, 64, 64), np.float32)
    strip = save_strip(frames, frames, frames, tmp_path / "strip.png")
    metrics = write_json({"run": 1}, tmp_path / "test_metrics.json")
    before = _snapshot(tmp_path)

    def crash(fd):
        raise OSError("disk full")

    monkeypatch.setattr("mmtune._io.os.fsync", crash)  # the new bytes are part-written, not yet renamed
    with pytest.raises(OSError, match="disk full"):
        save_strip(frames + 1, frames, frames, strip)
    with pytest.raises(OSError, match="disk full"):
        write_json({"run": 2}, metrics)
    assert _snapshot(tmp_path) == before  # the old files whole, no temp file beside them


def test_protocol_sets_the_budget_and_flags_override_it(tmp_path, monkeypatch, capsys):
    import mmtune.training.run as run_module

    seen = {}

    def fake_train_one(trial, out, resume=None, progress=True, protocol=None, protocol_overridden=None,
                       overwrite=False):
        seen.update(trial=trial, protocol=protocol, overridden=protocol_overridden)
        return TrainResult(TrainRecord(trial.model, "completed", "", None, {}, None, "cpu", 0.0, {}, {}),
                           TestResult("fake"))

    monkeypatch.setattr(run_module, "train_one", fake_train_one)
    main(["train", "--model", "simple_lstm", "--protocol", "reference", "--out", str(tmp_path / "a"), "--quiet"])
    trial = seen["trial"]
    assert (trial.data.train_size, trial.data.val_size, trial.data.test_size) == (8000, 1000, 1000)
    assert (trial.train.epochs, trial.train.batch_size) == (5, 16) and seen["overridden"] == []
    main(["train", "--model", "simple_lstm", "--protocol", "reference", "--epochs", "2", "--test-size", "50",
          "--out", str(tmp_path / "b"), "--quiet"])
    trial = seen["trial"]
    assert (trial.train.epochs, trial.data.test_size, trial.data.train_size) == (2, 50, 8000)
    assert sorted(seen["overridden"]) == ["epochs", "test_size"]
    main(["train", "--model", "simple_lstm", "--out", str(tmp_path / "c"), "--quiet"])  # no protocol: defaults
    assert (seen["trial"].data.train_size, seen["trial"].data.test_size, seen["protocol"]) == (10000, 2000, None)


def test_protocol_is_recorded_in_the_run_record(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--model", "simple_lstm", "--preset", "small", "--protocol", "reference", "--epochs", "1",
                 "--train-size", "16", "--val-size", "8", "--test-size", "8", "--out", str(out), "--quiet"]) == 0
    p = read_train_record(out).protocol
    assert p is not None
    assert p["name"] == "reference" and "Colonna" in p["source"]
    assert p["overridden_by_flags"] == ["epochs", "test_size", "train_size", "val_size"]
    assert "not the standard mnist_test_seq.npy" in p["test_clips"]


def test_onecycle_over_time_has_onecycles_shape():
    from mmtune.training.loop import schedule_factor

    assert schedule_factor("onecycle", 0.0) == pytest.approx(1 / 25)
    assert schedule_factor("onecycle", 0.3) == pytest.approx(1.0)
    assert schedule_factor("onecycle", 0.15) == pytest.approx((1 + 1 / 25) / 2)  # half-way up the cosine
    assert schedule_factor("onecycle", 1.0) == pytest.approx(1 / 25 / 1e4)
    assert schedule_factor("onecycle", 2.0) == schedule_factor("onecycle", 1.0)  # past the budget: its end
    assert schedule_factor("cosine", 0.5) == pytest.approx(0.5) and schedule_factor("constant", 0.7) == 1.0
    # The same shape as torch's OneCycleLR over steps (its defaults), at a few points.
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=101)
    lrs = []
    for _ in range(101):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    for step in (0, 10, 30, 60, 100):
        assert schedule_factor("onecycle", step / 100) == pytest.approx(lrs[step], rel=0.05, abs=1e-6)


def test_a_time_budget_ends_the_run_on_time_with_its_schedule_done():
    """Epochs of 16 clips take well under a second: 1,000 of them cannot fit in 4 s, so the budget ends
    the run, part-way through an epoch, with the lr annealed as OneCycle's end."""
    trial = _trial("simple_lstm", 1000, time_budget_s=4.0)
    trainer = Trainer(trial, progress=False)
    lrs = []
    t0 = __import__("time").perf_counter()
    fit = trainer.fit(lambda r, tr: lrs.append(tr.optimizer.param_groups[0]["lr"]))
    wall = __import__("time").perf_counter() - t0
    assert fit.status == "completed" and trainer.out_of_time and trainer.finished
    assert 3.0 < wall < 4.0 + 1.5  # the last validation was kept back; a little slack for a busy machine
    assert 2 < len(fit.history) < 1000
    assert max(lrs) > 0.5 * trial.train.lr and lrs[-1] < 0.05 * trial.train.lr  # warmed up, then annealed
    assert all(r.train_samples <= 16 for r in fit.history) and fit.history[0].train_samples == 16


def test_a_time_budget_cuts_a_long_epoch_part_way():
    """One epoch of 4,000 clips takes far longer than 3 s: the budget ends it part-way, and it is validated."""
    trial = build_trial("simple_lstm", "small", train_overrides={"epochs": 5, "batch_size": 8, "time_budget_s": 3.0},
                        data_overrides={**TINY_DATA, "train_size": 4000})
    trainer = Trainer(trial, progress=False)
    t0 = __import__("time").perf_counter()
    fit = trainer.fit()
    wall = __import__("time").perf_counter() - t0
    assert len(fit.history) == 1 and 0 < fit.history[0].train_samples < 4000
    assert wall < 3.0 + 2.0 and math.isfinite(fit.history[0].val_mse)
