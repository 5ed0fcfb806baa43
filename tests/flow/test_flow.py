"""Flow estimators, normalisation, the disk cache and what reaches the model."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from mmtune.data.datasets import T_IN, DataConfig, MovingMNIST
from mmtune.data.digits import load_digits
from mmtune.data.moving_mnist import DIGIT_SIZE, Clips, MotionSpec, generate
from mmtune.errors import MMTuneError
from mmtune.flow import (
    FLOW_SCALE,
    STORE_FACTOR,
    _raft,
    available_estimators,
    check_estimator,
    estimate_flow,
    estimators,
    flow_inputs,
    normalise,
)
from mmtune.flow import _cache as cache
from mmtune.flow.estimators import Raft, Truth

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pool() -> np.ndarray:
    return load_digits()


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Every test gets its own flow cache and an empty torch cache (no RAFT weights)."""
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "flowcache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(_raft.WEIGHTS_ENV, raising=False)


def _small_data(**kw) -> MovingMNIST:
    return MovingMNIST(DataConfig(**{"train_size": 4, "val_size": 3, "test_size": 2, **kw}))


def _brute_force_oracle(clip_pos: np.ndarray, digits: np.ndarray, t: int, size: int = 64) -> np.ndarray:
    """The displacement rule, pixel by pixel: (2, H, W) dx, dy of frame t."""
    out = np.zeros((2, size, size), np.float32)
    for r in range(size):
        for c in range(size):
            best, owner = 0, None
            for k, (pr, pc) in enumerate(clip_pos[t]):
                if pr <= r < pr + DIGIT_SIZE and pc <= c < pc + DIGIT_SIZE:
                    v = int(digits[k][r - pr, c - pc])
                    if v > best:
                        best, owner = v, k
            if owner is not None:
                dr, dc = clip_pos[t, owner] - clip_pos[t - 1, owner]
                out[:, r, c] = dc, dr
    return out


def test_oracle_equals_known_displacement(pool):
    clips = generate(pool, n=2, seed=3, stream=1, spec=MotionSpec(num_digits=2))
    truth = Truth(clips.positions, pool[clips.digit_ids])
    flow = estimate_flow("oracle", clips.frames, truth)
    assert flow.shape == (2, 20, 2, 64, 64) and flow.dtype == np.float32
    assert not flow[:, 0].any()  # frame 0 has no predecessor
    for i in range(2):
        for t in (1, 5, 9):
            np.testing.assert_array_equal(flow[i, t], _brute_force_oracle(clips.positions[i].astype(int), truth.digits[i], t))
    # with one digit: every ink pixel moves exactly like the digit, the background not at all
    one = generate(pool, n=3, seed=1, stream=1, spec=MotionSpec(num_digits=1))
    f = estimate_flow("oracle", one.frames, Truth(one.positions, pool[one.digit_ids]))
    step = np.diff(one.positions[:, :, 0].astype(np.float32), axis=1)  # (N, T-1, 2) row, col
    ink = one.frames[:, 1:] > 0
    for ch, axis in ((0, 1), (1, 0)):
        expected = np.broadcast_to(step[..., axis, None, None], ink.shape)
        np.testing.assert_array_equal(f[:, 1:, ch][ink], expected[ink])
        assert not f[:, 1:, ch][~ink].any()


def test_farneback_recovers_three_px_per_frame(pool):
    clips = generate(pool, n=8, seed=0, stream=1, spec=MotionSpec(num_digits=1, speed=3.0))
    frames = clips.frames[:, :T_IN]
    flow = estimate_flow("farneback", frames)
    oracle = estimate_flow("oracle", frames, Truth(clips.positions[:, :T_IN], pool[clips.digit_ids]))
    ink = frames[:, 1:] > 0
    speed = np.hypot(flow[:, 1:, 0], flow[:, 1:, 1])[ink]
    assert abs(np.median(speed) - 3.0) < 0.3
    error = np.hypot(*(flow - oracle)[:, 1:].transpose(2, 0, 1, 3, 4))[ink]
    assert np.median(error) < 0.5  # and the direction is right, not only the speed


def test_flow_inputs_shape_scale_and_frame_zero():
    data = _small_data()
    flow = flow_inputs(data, "val", "oracle")
    assert flow.shape == (3, T_IN, 2, 64, 64) and flow.dtype == np.float16
    assert not flow[:, 0].any() and np.abs(flow).max() <= 1.0
    pos = data.clips("val").positions.astype(np.float32)
    assert np.abs(flow).max() == pytest.approx(np.abs(np.diff(pos[:, :T_IN], axis=1)).max() / FLOW_SCALE, abs=1e-3)
    assert flow_inputs(data, "val", "none") is None
    est = flow_inputs(data, "val", "farneback")
    assert est.shape == (3, T_IN, 2, 64, 64) and est.dtype == np.float16 and not est[:, 0].any()


def test_cache_holds_half_size_float16_so_ten_thousand_sequences_fit_in_1_gb():
    """What the disk cache really holds: frames 1-9 of the normalised flow as 2x2 means in float16;
    at that size 10,000 sequences fit the 1 GB budget, and the round trip moves digit pixels little."""
    data = _small_data()
    served = flow_inputs(data, "val", "farneback")
    (array,) = cache.cache_dir().glob("*.npy")
    stored = np.load(array, mmap_mode="r")
    n, h = data.cfg.val_size, 64 // STORE_FACTOR
    assert stored.dtype == np.float16 and stored.shape == (n, T_IN - 1, 2, h, h)
    assert array.stat().st_size <= stored.nbytes + 4096  # the .npy header on top, nothing else
    assert 10_000 * stored.nbytes / n <= 1e9
    frames = data.frames("val")[:, :T_IN]
    full = normalise(estimate_flow("farneback", frames))  # what the model would see uncached
    means = full[:, 1:].reshape(n, T_IN - 1, 2, h, STORE_FACTOR, h, STORE_FACTOR).mean(axis=(4, 6))
    np.testing.assert_allclose(np.asarray(stored, np.float32), means, atol=1e-3)  # float16 rounding only
    ink = np.broadcast_to((frames > 0)[:, :, None], full.shape)
    rms_px = np.sqrt(np.mean(((served.astype(np.float32) - full) * FLOW_SCALE)[ink] ** 2))
    assert rms_px < 0.15  # measured 0.06 px (the module docstring's figure)


class _Tampered(MovingMNIST):
    """The same input frames with other target frames and other target-frame motion."""

    def clips(self, split: str, epoch: int = 0) -> Clips:
        c = super().clips(split, epoch)
        frames, pos = c.frames.copy(), c.positions.copy()
        rng = np.random.default_rng(7)
        frames[:, T_IN:] = rng.integers(0, 256, frames[:, T_IN:].shape, dtype=np.uint8)
        pos[:, T_IN:] = pos[:, T_IN:][:, ::-1]
        return Clips(frames, pos, c.digit_ids)


@pytest.mark.parametrize("estimator", ["oracle", "farneback", "raft_small"])
def test_no_target_frame_leaks_into_flow(estimator, tmp_path, monkeypatch):
    monkeypatch.setitem(estimators._ESTIMATORS, "raft_small", Raft("small", num_flow_updates=2))  # fast
    cfg = DataConfig(train_size=1, val_size=1, test_size=1)
    plain, tampered = MovingMNIST(cfg), _Tampered(cfg)
    assert (plain.frames("val")[:, T_IN:] != tampered.frames("val")[:, T_IN:]).any()
    with _raft.random_weights_for_tests():
        monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "a"))
        a = flow_inputs(plain, "val", estimator)
        monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "b"))  # recompute, no cache hit
        b = flow_inputs(tampered, "val", estimator)
    np.testing.assert_array_equal(a, b)


def test_raft_random_weights_end_to_end_on_cpu(pool, monkeypatch):
    monkeypatch.setitem(estimators._ESTIMATORS, "raft_small", Raft("small", num_flow_updates=2))  # fast
    clips = generate(pool, n=2, seed=0, stream=2)
    with _raft.random_weights_for_tests():
        check_estimator("raft_small")
        flow = Raft("small", num_flow_updates=2).estimate(clips.frames[:, :3])
        assert flow.shape == (2, 3, 2, 64, 64) and np.isfinite(flow).all() and not flow[:, 0].any()
        assert flow[:, 1:].any()  # random weights still give some (meaningless) flow
        data = _small_data(val_size=1)
        inputs = flow_inputs(data, "val", "raft_small")
    assert inputs.shape == (1, T_IN, 2, 64, 64) and inputs.dtype == np.float16


def test_raft_resizes_and_rescales_its_flow(pool, monkeypatch):
    seen = []

    def fake_model(a, b, num_flow_updates):
        import torch

        seen.append((tuple(a.shape), float(a.min()), float(a.max())))
        return [torch.full((a.shape[0], 2, *a.shape[2:]), 2.0)]  # 2 px right/down at 128 px

    monkeypatch.setattr(_raft, "load_model", lambda variant, device: fake_model)
    clips = generate(pool, n=3, seed=0, stream=2)
    flow = Raft("small", batch_size=4).estimate(clips.frames[:, :T_IN])
    assert seen[0][0] == (4, 3, 128, 128) and -1.0 <= seen[0][1] and seen[0][2] <= 1.0
    # the estimate runs from frame t back to t-1: the motion is its negation, in 64-px units
    np.testing.assert_allclose(flow[:, 1:], -1.0)
    assert not flow[:, 0].any()


def test_missing_raft_weights_name_the_file(tmp_path, monkeypatch):
    with pytest.raises(MMTuneError) as err:
        check_estimator("raft_small")
    msg = str(err.value)
    assert "raft_small_C_T_V2-01064c6d.pth" in msg and str(tmp_path / "torch") in msg and "\n" not in msg
    with pytest.raises(MMTuneError, match="raft_large_C_T_SKHT_V2-ff5fadd5.pth"):
        check_estimator("raft_large")
    monkeypatch.setenv(_raft.WEIGHTS_ENV, str(tmp_path / "nowhere.pth"))
    with pytest.raises(MMTuneError, match="nowhere.pth"):
        check_estimator("raft_small")
    assert available_estimators() == ("none", "farneback", "oracle")
    with pytest.raises(MMTuneError, match="unknown flow estimator"):
        check_estimator("raft")


def test_wrong_raft_weights_file_is_one_clear_error(tmp_path, monkeypatch, pool):
    bad = tmp_path / "raft_small_C_T_V2-01064c6d.pth"
    bad.write_bytes(b"not a checkpoint")
    monkeypatch.setenv(_raft.WEIGHTS_ENV, str(tmp_path))  # a folder holding the file name
    check_estimator("raft_small")
    with pytest.raises(MMTuneError, match="is not raft_small weights"):
        Raft("small").estimate(generate(pool, n=1, seed=0, stream=2).frames[:, :2])


def test_cli_fails_before_training_without_raft_weights(tmp_path, capsys):
    from mmtune.cli import main

    rc = main(["train", "--model", "conv_tau", "--preset", "small", "--flow", "raft_small", "--epochs", "1",
               "--train-size", "4", "--val-size", "2", "--test-size", "2", "--quiet", "--device", "cpu",
               "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2 and "raft_small_C_T_V2-01064c6d.pth" in err
    assert not (tmp_path / "run" / "last.pt").exists()


def test_oracle_refuses_a_test_file(tmp_path):
    test_file = tmp_path / "mnist_test_seq.npy"
    np.save(test_file, np.zeros((20, 2, 64, 64), np.uint8))
    with pytest.raises(MMTuneError, match="oracle flow needs"):
        check_estimator("oracle", DataConfig(test_file=str(test_file)))
    check_estimator("farneback", DataConfig(test_file=str(test_file)))


def test_cache_is_reused_and_a_corrupt_one_is_rebuilt(estimate_calls):
    calls = estimate_calls
    data = _small_data()
    first = flow_inputs(data, "val", "farneback")
    assert flow_inputs(data, "val", "farneback").tobytes() == first.tobytes() and len(calls) == 1
    root = cache.cache_dir()
    (array,) = root.glob("*.npy")
    raw = bytearray(array.read_bytes())
    raw[-100:] = bytes(100)  # flip the last values
    array.write_bytes(bytes(raw))
    np.testing.assert_array_equal(flow_inputs(data, "val", "farneback"), first)
    assert len(calls) == 2
    array.write_bytes(array.read_bytes()[:200])  # truncated
    np.testing.assert_array_equal(flow_inputs(data, "val", "farneback"), first)
    array.with_suffix(".json").unlink()  # a missing sidecar means "not built"
    np.testing.assert_array_equal(flow_inputs(data, "val", "farneback"), first)
    assert len(calls) == 4
    assert sorted(p.suffix for p in root.iterdir()) == [".json", ".lock", ".npy"]


def test_cache_key_follows_what_produced_the_flow(estimate_calls):
    calls = estimate_calls
    flow_inputs(_small_data(seed=0), "val", "farneback")
    flow_inputs(_small_data(seed=1), "val", "farneback")  # other frames
    flow_inputs(_small_data(seed=0), "test", "farneback")  # other split
    assert len(calls) == 3 and len(list(cache.cache_dir().glob("*.npy"))) == 3


def test_online_training_flow_is_fresh_and_not_cached():
    data = _small_data(online=True)
    a = flow_inputs(data, "train", "farneback", epoch=0)
    b = flow_inputs(data, "train", "farneback", epoch=1)
    assert a.shape == b.shape == (4, T_IN, 2, 64, 64) and not np.array_equal(a, b)
    assert not cache.cache_dir().exists() or not list(cache.cache_dir().glob("*.npy"))


_CHILD = textwrap.dedent(
    """
    import os, sys, time
    import numpy as np
    from mmtune.data.datasets import DataConfig, MovingMNIST
    from mmtune.flow import _cache, flow_inputs

    def build(out):
        open(os.path.join(sys.argv[1], f"built-{os.getpid()}"), "w").close()
        time.sleep(1.5)  # hold the lock long enough for the other process to arrive
        out[:] = (np.arange(out.size) % 7).reshape(out.shape)

    arr = _cache.load_or_build({"test": "two processes"}, (3, 9, 2, 32, 32), build)
    flow = flow_inputs(MovingMNIST(DataConfig(train_size=1, val_size=3, test_size=1)), "val", "farneback")
    print(float(np.asarray(arr, np.float64).sum()), flow.tobytes().hex()[:64] + str(float(flow.sum())))
    """
)


def test_two_processes_building_one_cache_end_with_one_valid_cache(tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen([sys.executable, "-c", _CHILD, str(markers)], env=env, cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    assert outs[0][0] == outs[1][0] and outs[0][0].strip()
    assert len(list(markers.iterdir())) == 1  # one process built, the other waited and read
    root = cache.cache_dir()
    assert len(list(root.glob("*.npy"))) == 2 and len(list(root.glob("*.json"))) == 2
    assert not list(root.glob(".*tmp*"))
    arr = cache.load_or_build({"test": "two processes"}, (3, 9, 2, 32, 32), lambda out: pytest.fail("rebuilt"))
    assert float(np.asarray(arr, np.float64).sum()) == float(outs[0][0].split()[0])
