"""Flow on your own array files: farneback on the channel mean of the input frames, cached; others refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmtune.cli import main
from mmtune.data.arrays import ArrayDataConfig, ArrayDataset
from mmtune.errors import MMTuneError
from mmtune.experiment import read_test_metrics, read_train_record
from mmtune.flow import _cache, _expand, check_estimator, flow_inputs, normalise
from mmtune.flow.estimators import Farneback
from mmtune.training.config import build_trial
from mmtune.training.cost import count_train_flops
from mmtune.training.memory import estimate

T_IN = 8
FAST = ["--preset", "small", "--epochs", "1", "--batch-size", "4", "--device", "cpu", "--quiet",
        "--t-in", "8", "--t-out", "8", "--val-fraction", "0.2", "--test-fraction", "0.2"]


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv(_cache.CACHE_ENV, str(tmp_path / "flowcache"))


def _clips(n: int = 12, t: int = 16, h: int = 16, w: int = 24) -> np.ndarray:
    """(n, t, 2, h, w) uint8: a bright square moving 1 px/frame right, 200 in channel 0 and 100 in
    channel 1 (shifted down 2 rows), so the channel mean is a whole number."""
    a = np.zeros((n, t, 2, h, w), np.uint8)
    for i in range(n):
        for k in range(t):
            x = (i + k) % (w - 6)
            a[i, k, 0, 4:10, x : x + 6] = 200
            a[i, k, 1, 6:12, x : x + 6] = 100
    return a


def _data(path: Path) -> ArrayDataset:
    return ArrayDataset(ArrayDataConfig(path=str(path), t_in=T_IN, t_out=8, val_fraction=0.2, test_fraction=0.2))


def _grey_inputs(data: ArrayDataset, split: str, clips: np.ndarray) -> np.ndarray:
    """The channel mean of each window's input frames, (N, T_IN, H, W) uint8."""
    grey = clips.mean(axis=2).round().astype(np.uint8)
    return np.stack([grey[c, s : s + T_IN] for c, s in data.frames(split).index])


def test_farneback_on_an_array_trains_end_to_end_with_two_flow_channels(tmp_path):
    np.save(path := tmp_path / "clips.npy", _clips())
    out = tmp_path / "run"
    argv = ["train", "--model", "conv_tau", "--data", str(path), "--flow", "farneback", *FAST, "--out", str(out)]
    assert main(argv) == 0
    assert read_train_record(out).config["model_cfg"]["in_channels"] == 4  # 2 channels + 2 flow channels
    assert np.isfinite(read_test_metrics(out)["conv_tau"].test["mse_frame"])
    data = _data(path)
    flow = flow_inputs(data, "train", "farneback")
    assert flow.shape == (8, T_IN, 2, 16, 24) and flow.dtype == np.float16
    assert not flow[:, 0].any()  # frame 0 has no predecessor
    square = _grey_inputs(data, "train", _clips())[:, 1:] > 0
    right, down = flow[:, 1:, 0][square], flow[:, 1:, 1][square]
    assert right.mean() > 0.15 and np.median(right) == pytest.approx(1 / 4, abs=0.05)  # 1 px/frame, FLOW_SCALE 4
    assert np.abs(down).mean() < 0.05  # it moves right only


def test_memory_and_cost_count_the_flow_channels(tmp_path):
    np.save(path := tmp_path / "clips.npy", _clips())
    data = {"path": str(path), "t_in": T_IN, "t_out": 8}
    plain = build_trial("conv_tau", "small", data_overrides=data)
    flow = build_trial("conv_tau", "small", train_overrides={"flow": "farneback"}, data_overrides=data)
    assert (plain.model_cfg.in_channels, flow.model_cfg.in_channels) == (2, 4)
    assert estimate(flow).activation_bytes > estimate(plain).activation_bytes
    assert count_train_flops("conv_tau", flow.model_cfg, spec=flow.spec) > count_train_flops(
        "conv_tau", plain.model_cfg, spec=plain.spec)


def test_the_flow_of_channels_is_the_flow_of_their_mean(tmp_path):
    clips = _clips()
    np.save(two := tmp_path / "two.npy", clips)
    grey = clips.mean(axis=2).astype(np.uint8)  # 200/2 and 100/2: whole numbers
    np.save(one := tmp_path / "grey.npy", grey[:, :, None])
    from_two, from_grey = flow_inputs(_data(two), "val", "farneback"), flow_inputs(_data(one), "val", "farneback")
    np.testing.assert_array_equal(from_two, from_grey)
    # ... which is Farneback's flow of the grey input frames (never the targets), normalised, stored
    # at half size (float16) and expanded on load
    raw = normalise(Farneback().estimate(_grey_inputs(_data(two), "val", clips)))[:, 1:]
    half = raw.reshape(*raw.shape[:3], 8, 2, 12, 2).mean(axis=(-3, -1)).astype(np.float16)
    np.testing.assert_array_equal(from_two, _expand(half, (16, 24)))


def test_odd_frames_are_stored_at_full_size(tmp_path):
    np.save(path := tmp_path / "odd.npy", _clips(h=15, w=21)[:, :, :1])
    data = _data(path)
    flow = flow_inputs(data, "test", "farneback")
    frames = _grey_inputs(data, "test", np.load(path))
    expected = normalise(Farneback().estimate(frames)).astype(np.float16)
    np.testing.assert_array_equal(flow, expected)
    (stored,) = _cache.cache_dir().glob("*.npy")
    assert np.load(stored).shape == (len(frames), T_IN - 1, 2, 15, 21)


@pytest.mark.parametrize("estimator", ["oracle", "raft_small", "raft_large"])
def test_other_estimators_on_an_array_are_one_line_exit_2_nothing_written(estimator, tmp_path, capsys):
    np.save(path := tmp_path / "clips.npy", _clips())
    out = tmp_path / "run"
    argv = ["train", "--model", "conv_tau", "--data", str(path), "--flow", estimator, *FAST, "--out", str(out)]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == (
        f"mmtune: error: flow {estimator!r} is offered for generated Moving MNIST only; for an array file "
        f"({path}) --flow farneback is the one offered (or none)")
    assert not out.exists() and not _cache.cache_dir().exists()
    with pytest.raises(MMTuneError, match="farneback is the one offered"):
        check_estimator(estimator, ArrayDataConfig(path=str(path)))
    check_estimator("farneback", ArrayDataConfig(path=str(path)))
    check_estimator("none", ArrayDataConfig(path=str(path)))


def test_the_second_run_reads_the_cache_and_the_key_follows_file_and_split(tmp_path, estimate_calls):
    calls = estimate_calls
    np.save(path := tmp_path / "clips.npy", _clips())
    first = flow_inputs(_data(path), "val", "farneback")
    files = sorted(_cache.cache_dir().iterdir())
    assert len(calls) == 1 and len(list(_cache.cache_dir().glob("*.npy"))) == 1
    np.testing.assert_array_equal(flow_inputs(_data(path), "val", "farneback"), first)
    assert len(calls) == 1 and sorted(_cache.cache_dir().iterdir()) == files  # read, not built
    flow_inputs(_data(path), "test", "farneback")  # another split: other windows
    np.save(path, _clips()[::-1])  # the same file name, other clips
    flow_inputs(_data(path), "val", "farneback")
    assert len(calls) == 3 and len(list(_cache.cache_dir().glob("*.npy"))) == 3
