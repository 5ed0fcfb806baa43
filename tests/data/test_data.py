"""Digits, the Moving MNIST generator and the splits."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from mmtune.data.datasets import DataConfig, MovingMNIST
from mmtune.data.digits import load_digits, split_digits
from mmtune.data.moving_mnist import DIGIT_SIZE, MotionSpec, generate, load_standard_file, uniform
from mmtune.errors import MMTuneError

# sha256 of the default test split (seed 0, 2,000 sequences). It pins the protocol: the same
# seed must give these exact bytes on every machine; change it only when the protocol changes.
TEST_SPLIT_SHA256 = "1744fa0c15f9bcade99aa40116d6de21f27a2bea896eaa6b8370df99f4e24820"


@pytest.fixture(scope="module")
def pool() -> np.ndarray:
    return split_digits(load_digits()).trainval


def test_embedded_digits_are_real_mnist():
    digits = load_digits()
    assert digits.shape == (10_000, 28, 28) and digits.dtype == np.uint8
    assert digits.max() == 255 and 20 < digits.mean() < 50  # MNIST's mean intensity is ~33
    assert digits[:, :2, :].mean() < 1.0 and digits[:, :, :2].mean() < 1.0  # dark borders


def test_heldout_digits_are_disjoint():
    pools = split_digits(load_digits())
    assert len(pools.trainval) + len(pools.test) == 10_000
    a = {hashlib.md5(x.tobytes()).digest() for x in pools.trainval}
    b = {hashlib.md5(x.tobytes()).digest() for x in pools.test}
    # a few MNIST images are byte-identical duplicates; the split itself is by index
    assert len(a & b) <= 2


def test_sequence_depends_only_on_seed_and_index(pool):
    whole = generate(pool, 40, seed=7, stream=1)
    part = generate(pool, 10, seed=7, stream=1, start=25)
    np.testing.assert_array_equal(part.frames, whole.frames[25:35])
    other = generate(pool, 10, seed=8, stream=1, start=25)
    assert not np.array_equal(other.frames, part.frames)


def _splitmix64_reference(x: int) -> int:
    """SplitMix64's finaliser (Steele, Lea, Flood 2014) in Python integers: an independent reference."""
    m = (1 << 64) - 1
    z = (x + 0x9E3779B97F4A7C15) & m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


def test_uniform_is_in_range_splitmix64_and_addressed_by_index():
    u = uniform(0, 1, np.arange(1000), 8)
    assert u.shape == (1000, 8) and 0.0 <= u.min() and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.02
    # The numbers are SplitMix64 of (seed, stream, index, draw): the same on every machine and numpy.
    key = _splitmix64_reference(_splitmix64_reference(7) ^ 3)
    for i, d in [(0, 0), (5, 2), (999, 7)]:
        h = _splitmix64_reference(_splitmix64_reference(key ^ i) ^ d)
        assert uniform(7, 3, np.arange(1000), 8)[i, d] == (h >> 11) / float(1 << 53)
    # A clip's numbers depend on its index alone, not on which other clips are drawn with it.
    np.testing.assert_array_equal(uniform(0, 1, np.array([999, 5]), 8), u[[999, 5]])


def test_test_split_checksum():
    frames = MovingMNIST(DataConfig(seed=0)).frames("test")
    assert frames.shape == (2000, 20, 64, 64) and frames.dtype == np.uint8
    assert hashlib.sha256(frames.tobytes()).hexdigest() == TEST_SPLIT_SHA256


def test_motion_is_constant_speed_and_bounces(pool):
    spec = MotionSpec(num_digits=1, speed=3.0)
    clips = generate(pool, 200, seed=0, stream=1, spec=spec)
    pos = clips.positions[:, :, 0].astype(float)  # (N, T, 2)
    lim = 64 - DIGIT_SIZE
    assert pos.min() >= 0 and pos.max() <= lim
    step = np.abs(np.diff(pos, axis=1))
    assert step.max() <= 3.0 + 1.0  # rounding of a 3 px/frame step
    speeds = np.linalg.norm(np.diff(pos, axis=1), axis=-1)
    assert abs(np.median(speeds) - 3.0) < 0.6
    # somewhere a coordinate reverses direction: a bounce
    d = np.diff(pos, axis=1)
    assert (np.sign(d[:, 1:]) * np.sign(d[:, :-1]) < 0).any()


def test_frames_place_digits_combined_by_max(pool):
    spec = MotionSpec(num_digits=2)
    clips = generate(pool, 5, seed=3, stream=1, spec=spec)
    n, t = 2, 4
    expected = np.zeros((64, 64), np.uint8)
    for k in range(2):
        r, c = clips.positions[n, t, k]
        patch = pool[clips.digit_ids[n, k]]
        expected[r : r + 28, c : c + 28] = np.maximum(expected[r : r + 28, c : c + 28], patch)
    np.testing.assert_array_equal(clips.frames[n, t], expected)


@pytest.mark.parametrize("num_digits", [1, 2, 3])
def test_num_digits(pool, num_digits):
    clips = generate(pool, 3, 0, 1, MotionSpec(num_digits=num_digits))
    assert clips.positions.shape == (3, 20, num_digits, 2)


def test_splits_differ_and_test_uses_heldout_digits():
    data = MovingMNIST(DataConfig(train_size=8, val_size=8, test_size=8))
    assert not np.array_equal(data.frames("train"), data.frames("val"))
    assert data.clips("test").digit_ids.max() < len(data.pools.test)


def test_online_training_data_changes_every_epoch():
    data = MovingMNIST(DataConfig(train_size=4, online=True))
    e0, e1 = data.frames("train", 0).copy(), data.frames("train", 1)
    assert not np.array_equal(e0, e1)
    np.testing.assert_array_equal(e0, data.frames("train", 0))


def test_standard_file_is_loaded(tmp_path):
    arr = np.random.default_rng(0).integers(0, 255, (20, 3, 64, 64), dtype=np.uint8)
    np.save(tmp_path / "mnist_test_seq.npy", arr)
    data = MovingMNIST(DataConfig(test_file=str(tmp_path / "mnist_test_seq.npy")))
    np.testing.assert_array_equal(data.frames("test"), arr.transpose(1, 0, 2, 3))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: np.save(p, np.zeros((10, 3, 64, 64), np.uint8)), "shape"),
        (lambda p: p.write_text("not numpy"), "not a readable"),
        (lambda p: None, "does not exist"),
    ],
)
def test_bad_standard_file(tmp_path, make, match):
    path = tmp_path / "x.npy"
    make(path)
    with pytest.raises(MMTuneError, match=match):
        load_standard_file(str(path))


@pytest.mark.parametrize(
    "kwargs, field",
    [({"num_digits": 4}, "num_digits"), ({"train_size": 0}, "train_size"), ({"digits": "emnist"}, "digits"),
     ({"speed": -1.0}, "speed")],
)
def test_bad_data_config(kwargs, field):
    with pytest.raises(MMTuneError, match=field):
        DataConfig(**kwargs)


def test_unknown_data_key():
    with pytest.raises(MMTuneError, match="bogus"):
        DataConfig.from_dict({"bogus": 1})


def test_torchvision_offline_gives_clear_error(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*a, **k):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(MMTuneError, match="--digits embedded"):
        load_digits("torchvision", tmp_path)
