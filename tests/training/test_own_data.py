"""`mmtune train --data`: your own array trains end to end; a bad file is one line, exit 2, nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from mmtune.cli import main
from mmtune.data.spec import ClipSpec
from mmtune.errors import MMTuneError
from mmtune.experiment import read_baselines, read_test_metrics, read_train_record
from mmtune.models import config_fields, list_models
from mmtune.training.config import build_trial

SPEC = ClipSpec(t_in=8, t_out=8, channels=2, height=16, width=24)  # non-square, 2 channels, 8+8 frames
FAST = ["--preset", "small", "--epochs", "1", "--batch-size", "4", "--device", "cpu", "--quiet"]


def _clips(n: int = 10, t: int = 16) -> np.ndarray:
    """n clips (N, T, C, H, W) uint8 of a bright square moving right, one channel the other's mirror."""
    a = np.zeros((n, t, 2, 16, 24), np.uint8)
    for i in range(n):
        for k in range(t):
            x = (i + k) % 20
            a[i, k, 0, 4:10, x : x + 4] = 255
            a[i, k, 1, 6:12, 20 - x : 24 - x] = 200
    return a


@pytest.fixture(scope="module")
def two_channel(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "clips.npy"
    np.save(path, _clips())
    return path


@pytest.mark.parametrize("model", list_models())
def test_every_model_trains_on_a_non_square_two_channel_8_plus_8_array(model, two_channel, tmp_path):
    out = tmp_path / "run"
    argv = ["train", "--model", model, "--data", str(two_channel), "--t-in", "8", "--t-out", "8", *FAST,
            "--out", str(out), "--val-fraction", "0.2", "--test-fraction", "0.2"]
    if "out_channels" not in config_fields(model):  # a plugin predicting one channel: refused in one line
        with pytest.raises(MMTuneError, match="predicts one channel"):
            build_trial(model, data_overrides={"path": str(two_channel), "t_in": 8, "t_out": 8})
        return
    assert main(argv) == 0
    record, tested = read_train_record(out), read_test_metrics(out)[model]
    assert record.clip_spec == {"t_in": 8, "t_out": 8, "channels": 2, "height": 16, "width": 24}
    assert record.config["model_cfg"]["out_channels"] == 2
    assert record.units["mse_frame"].startswith("per-frame MSE: sum over 2x16x24 values")
    assert tested.units == record.units and tested.vs_best_baseline is not None
    assert tested.vs_best_baseline["pixels"] == 768
    test = tested.test
    assert test is not None
    # mse_pixel255 = mse_frame * 65025 / (C * H * W), C * H * W = 768 here
    assert test["mse_pixel255"] == pytest.approx(test["mse_frame"] * 65025 / 768, rel=1e-4)
    assert read_baselines(out).splits["test"].size == tested.test_size == 2  # 10 clips: 6 train, 2 val, 2 test
    assert (out / "strip.png").is_file()


def test_the_spec_sets_the_model_and_a_contrary_field_is_refused(two_channel):
    trial = build_trial("simple_lstm", "small", data_overrides={"path": str(two_channel), "t_in": 8, "t_out": 8})
    cfg = trial.model_cfg
    assert trial.spec == SPEC and (cfg.t_in, cfg.t_out, cfg.out_channels, cfg.height, cfg.width) == (8, 8, 2, 16, 24)
    with pytest.raises(MMTuneError, match=r"t_in=10 does not fit the data \(8\+8 frames of 2x16x24"):
        build_trial("conv_lstm", model_overrides={"t_in": 10},
                    data_overrides={"path": str(two_channel), "t_in": 8, "t_out": 8})


def test_a_size_the_architecture_cannot_take_is_one_line(tmp_path, capsys):
    np.save(tmp_path / "odd.npy", np.zeros((6, 16, 1, 18, 18), np.uint8))
    argv = ["train", "--model", "conv_tau", "--data", str(tmp_path / "odd.npy"), "--layout", "NTCHW",
            "--t-in", "8", "--t-out", "8", *FAST, "--set", "N_S=4", "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("mmtune: error: N_S must be at most 2 for 18x18 frames (each second layer halves H and W), "
                   "got 4")
    assert not (tmp_path / "out").exists()


def test_flow_and_moving_mnist_flags_are_refused_with_data(two_channel, tmp_path, capsys):
    base = ["train", "--data", str(two_channel), "--t-in", "8", "--t-out", "8", *FAST, "--out", str(tmp_path / "o")]
    assert main([*base, "--flow", "oracle"]) == 2  # farneback is the one flow offered for an array
    assert "flow 'oracle' is offered for generated Moving MNIST only" in capsys.readouterr().err
    assert main([*base, "--train-size", "16"]) == 2
    assert "--train-size describe(s) generated Moving MNIST" in capsys.readouterr().err
    assert main(["train", "--t-in", "8", *FAST, "--out", str(tmp_path / "o")]) == 2
    assert "--t-in go(es) with --data PATH" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def _write_bad(tmp_path: Path, case: str) -> tuple[Path, list[str]]:
    """A bad file of `case` and the extra flags it takes."""
    good = _clips(6).astype(np.float32) / 255
    if case == "nan":
        good[2, 3, 0, 1, 1] = np.nan
        np.save(p := tmp_path / "nan.npy", good)
    elif case == "inf":
        good[0, 0, 0, 0, 0] = np.inf
        np.save(p := tmp_path / "inf.npy", good)
    elif case == "float_range":
        good[1, 1, 1, 1, 1] = 1.5
        np.save(p := tmp_path / "range.npy", good)
    elif case == "int_range":
        np.save(p := tmp_path / "int.npy", np.full((6, 16, 2, 16, 24), 300, np.int16))
    elif case == "few_frames":
        np.save(p := tmp_path / "short.npy", _clips(6, t=12))
        return p, ["--layout", "NTCHW"]
    elif case == "few_frames_detected":
        np.save(p := tmp_path / "short4.npy", np.zeros((6, 12, 16, 24), np.uint8))
    elif case == "3d":
        np.save(p := tmp_path / "flat.npy", np.zeros((6, 16, 24), np.uint8))
    elif case == "ragged":
        ragged = np.empty(2, dtype=object)
        ragged[0], ragged[1] = np.zeros((16, 16, 24), np.uint8), np.zeros((20, 16, 24), np.uint8)
        np.save(p := tmp_path / "ragged.npy", ragged, allow_pickle=True)
    elif case == "ambiguous":
        np.save(p := tmp_path / "amb.npy", np.zeros((20, 30, 16, 24), np.uint8))
    elif case == "missing_dataset":
        with h5py.File(p := tmp_path / "clips.h5", "w") as f:
            f.create_dataset("train", data=_clips(6))
        return p, ["--data-key", "video"]
    elif case == "truncated":
        np.save(p := tmp_path / "cut.npy", _clips(6))
        p.write_bytes(p.read_bytes()[:5000])
    elif case == "truncated_h5":
        with h5py.File(p := tmp_path / "cut.h5", "w") as f:
            f.create_dataset("clips", data=_clips(6))
        p.write_bytes(p.read_bytes()[:1500])
    elif case == "truncated_npz":
        np.savez(p := tmp_path / "cut.npz", clips=_clips(6))
        p.write_bytes(p.read_bytes()[:3000])
    return p, []


BAD = {
    "nan": "holds NaN values",
    "inf": "holds inf values",
    "float_range": "holds values outside [0, 1] for its float32 (min 0, max 1.5)",
    "int_range": "holds values outside 0-255 for its int16",
    "few_frames": "clips of 12 frames are fewer than t_in + t_out = 16",
    "few_frames_detected": "clips have fewer frames than t_in + t_out = 16",
    "3d": "is 3-D (6, 16, 24); clips need 4 or 5 axes",
    "ragged": "holds a ragged (object) array",
    "ambiguous": "the layout is ambiguous (NTHW or TNHW); give it with --layout",
    "missing_dataset": "has no dataset 'video'; it holds ['train']",
    "truncated": "is truncated: its header says (6, 16, 2, 16, 24) uint8 (73,728 bytes), the file holds",
    "truncated_h5": "is not a readable HDF5 file",
    "truncated_npz": "is not a readable .npz",
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_file_is_one_line_naming_it_exit_2_nothing_written(case, tmp_path, capsys):
    path, extra = _write_bad(tmp_path, case)
    out = tmp_path / "out"
    argv = ["train", "--model", "simple_lstm", "--data", str(path), "--t-in", "8", "--t-out", "8", *extra, *FAST,
            "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert str(path) in err and BAD[case] in err, err
    assert not out.exists()


def test_the_command_itself_exits_2_with_one_line(tmp_path):
    """The console path, in a fresh process: NaN values are one stderr line and exit code 2."""
    path, _ = _write_bad(tmp_path, "nan")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "mmtune.cli", "train", "--data", str(path), "--t-in", "8",
                           "--t-out", "8", *FAST, "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"mmtune: error: data file {path} holds NaN values; "
                                                f"clips must be finite"]
    assert not (tmp_path / "out").exists()
