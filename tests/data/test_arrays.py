"""Array datasets: files, layouts, values, windows and splits, read lazily (real files, tiny sizes)."""

from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np
import pytest

from mmtune.data.arrays import ArrayDataConfig, ArrayDataset, detect_layout, split_clips
from mmtune.data.datasets import DataConfig, make_data_config, open_data
from mmtune.data.spec import MOVING_MNIST, ClipSpec
from mmtune.errors import MMTuneError

# 6 clips of 20 frames of 2 x 12 x 16, every value distinct enough to tell reads apart.
BASE = (np.arange(6 * 20 * 2 * 12 * 16) % 251).astype(np.uint8).reshape(6, 20, 2, 12, 16)


def _as_layout(a: np.ndarray, layout: str) -> np.ndarray:
    """BASE (N, T, C, H, W) in another layout (NTHW/TNHW take channel 0)."""
    return {"NTCHW": a, "NTHWC": a.transpose(0, 1, 3, 4, 2), "NTHW": a[:, :, 0],
            "TNHW": a[:, :, 0].transpose(1, 0, 2, 3)}[layout]


def _cfg(path, **kw) -> ArrayDataConfig:
    return ArrayDataConfig(path=str(path), **{"t_in": 4, "t_out": 4, "val_fraction": 0.2, "test_fraction": 0.2, **kw})


def _all_windows(data: ArrayDataset, split: str) -> np.ndarray:
    w = data.frames(split)
    return w[np.arange(len(w))]


def test_moving_mnist_spec_is_10_plus_10_grey_64():
    assert DataConfig().spec == MOVING_MNIST == ClipSpec(10, 10, 1, 64, 64)
    assert MOVING_MNIST.pixels == 4096 and MOVING_MNIST.frames == 20
    with pytest.raises(MMTuneError, match="channels must be a positive integer, got 0"):
        ClipSpec(channels=0)


@pytest.mark.parametrize(
    "shape, needed, layout",
    [
        ((20, 5, 64, 64), 20, "TNHW"),  # the standard mnist_test_seq.npy, tiny: 5 clips
        ((5, 20, 64, 64), 20, "NTHW"),
        ((4, 16, 2, 12, 16), 16, "NTCHW"),
        ((4, 16, 12, 16, 3), 16, "NTHWC"),
    ],
)
def test_layout_is_detected_when_one_reading_fits(shape, needed, layout):
    assert detect_layout(shape, needed, "f.npy") == layout


@pytest.mark.parametrize(
    "shape, needed, message",
    [
        ((20, 30, 8, 8), 20, "ambiguous (NTHW or TNHW); give it with --layout"),
        ((4, 16, 8, 8, 8), 16, "ambiguous"),
        ((4, 10, 8, 8), 16, "fewer frames than t_in + t_out = 16"),
        ((4, 16, 8), 16, "is 3-D (4, 16, 8)"),
    ],
)
def test_layout_that_cannot_be_told_is_one_line(shape, needed, message):
    with pytest.raises(MMTuneError, match="f.npy") as info:
        detect_layout(shape, needed, "f.npy")
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("layout", ["NTCHW", "NTHWC", "NTHW", "TNHW"])
@pytest.mark.parametrize("fmt", ["npy", "npz", "npz_compressed", "h5"])
def test_every_file_type_and_layout_reads_the_same_clips(tmp_path, layout, fmt):
    raw = _as_layout(BASE, layout)
    path = tmp_path / f"clips.{fmt.split('_')[0]}"
    if fmt == "npy":
        np.save(path, raw)
    elif fmt == "npz":
        np.savez(path, clips=raw)
    elif fmt == "npz_compressed":
        np.savez_compressed(path, clips=raw)
    else:
        with h5py.File(path, "w") as f:
            f.create_dataset("group/clips", data=raw)
    data = ArrayDataset(_cfg(path, layout=layout, t_in=10, t_out=10))
    channels = 1 if layout in ("NTHW", "TNHW") else 2
    assert data.spec == ClipSpec(10, 10, channels, 12, 16)
    want = BASE[:, :, :channels].astype(np.float32) / 255
    for split in ("train", "val", "test"):
        w = data.frames(split)
        clips = w.index[:, 0]
        assert np.array_equal(_all_windows(data, split), want[clips])
    if fmt in ("npy", "npz"):  # mapped, not loaded: np.savez stores members uncompressed
        assert isinstance(data.sources["all"].raw, np.memmap)
    if fmt == "h5":
        assert isinstance(data.sources["all"].raw, h5py.Dataset)


def test_standard_tnhw_file_tiny(tmp_path):
    """mnist_test_seq.npy's layout, (20, N, 64, 64) uint8: clip i is arr[:, i]."""
    arr = np.random.default_rng(0).integers(0, 256, (20, 5, 64, 64), dtype=np.uint8)
    np.save(tmp_path / "mnist_test_seq.npy", arr)
    data = ArrayDataset(ArrayDataConfig(path=str(tmp_path / "mnist_test_seq.npy"), val_fraction=0.2,
                                        test_fraction=0.2))
    assert data.spec == MOVING_MNIST and data.sources["all"].layout == "TNHW"
    w = data.frames("test")
    (clip,) = w.index[:, 0]
    assert np.array_equal(w[np.arange(1)][0, :, 0], arr[:, clip].astype(np.float32) / 255)


def test_windows_cut_longer_clips_with_a_stride(tmp_path):
    np.save(tmp_path / "c.npy", BASE)
    data = ArrayDataset(_cfg(tmp_path / "c.npy", stride=3))  # 8-frame windows of 20 frames: starts 0,3,..,12
    starts = data.frames("train").index[:, 1]
    assert sorted(set(starts.tolist())) == [0, 3, 6, 9, 12]
    assert data.cfg.split_sizes() == {"train": 4 * 5, "val": 5, "test": 5}
    w = data.frames("train")
    clip, start = w.index[7]
    assert np.array_equal(w[np.array([7])][0], BASE[clip, start : start + 8].astype(np.float32) / 255)
    # No stride: windows do not overlap (start 0 and 8 of 20 frames).
    assert sorted(set(ArrayDataset(_cfg(tmp_path / "c.npy")).frames("val").index[:, 1].tolist())) == [0, 8]


def test_split_is_of_whole_clips_seeded_and_disjoint():
    a = split_clips(50, 0.1, 0.2, seed=3, what="f")
    assert [len(a[s]) for s in ("train", "val", "test")] == [35, 5, 10]
    assert sorted(np.concatenate(list(a.values())).tolist()) == list(range(50))
    b = split_clips(50, 0.1, 0.2, seed=3, what="f")
    assert all(np.array_equal(a[s], b[s]) for s in a)
    assert not np.array_equal(a["test"], split_clips(50, 0.1, 0.2, seed=4, what="f")["test"])
    with pytest.raises(MMTuneError, match="holds 2 clips, too few"):
        split_clips(2, 0.1, 0.1, seed=0, what="f")


def test_one_file_or_key_per_split(tmp_path):
    for s, n in (("train", 4), ("val", 1), ("test", 2)):
        np.save(tmp_path / f"{s}.npy", BASE[:n])
    files = ArrayDataConfig(train=str(tmp_path / "train.npy"), val=str(tmp_path / "val.npy"),
                            test=str(tmp_path / "test.npy"), t_in=10, t_out=10)
    assert files.split_sizes() == {"train": 4, "val": 1, "test": 2}
    np.savez(tmp_path / "splits.npz", tr=BASE[:4], va=BASE[4:5], te=BASE[5:])
    keys = make_data_config({"path": str(tmp_path / "splits.npz"), "train": "tr", "val": "va", "test": "te",
                             "t_in": 10, "t_out": 10})
    data = open_data(keys)
    assert isinstance(data, ArrayDataset) and keys.split_sizes() == {"train": 4, "val": 1, "test": 1}
    assert np.array_equal(_all_windows(data, "test")[0], BASE[5].astype(np.float32) / 255)
    with pytest.raises(MMTuneError, match=r"missing \['test'\]"):
        ArrayDataConfig(train="a.npy", val="b.npy")


def test_float_values_are_served_as_they_are(tmp_path):
    arr = np.random.default_rng(1).random((5, 8, 6, 6)).astype(np.float64)
    np.save(tmp_path / "f.npy", arr)
    data = ArrayDataset(_cfg(tmp_path / "f.npy"))
    w = data.frames("train")
    got = w[np.arange(len(w))]
    assert got.dtype == np.float32 and np.allclose(got[:, :, 0], arr[w.index[:, 0]].astype(np.float32))


def test_a_file_larger_than_the_bound_is_read_window_by_window(tmp_path):
    """A sparse 1.6 GB .npy (header + holes): reading every window of its train split keeps the RSS far below
    its size (mapped pages that were read are handed back)."""
    path = tmp_path / "big.npy"
    shape = (800, 20, 1, 320, 320)  # 1.6 GB of uint8
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": shape})
        f.truncate(f.tell() + int(np.prod(shape)))
    code = f"""
import numpy as np
from mmtune.data.arrays import ArrayDataConfig, ArrayDataset
data = ArrayDataset(ArrayDataConfig(path={str(path)!r}))
w = data.frames("train")
for i in range(0, len(w), 8):
    assert w[np.arange(i, min(i + 8, len(w)))].max() == 0
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))  # peak RSS since exec
print(len(w), int(hwm.split()[1]) // 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    windows, peak_mb = map(int, out.stdout.split())
    assert windows == 640 and peak_mb < 400, peak_mb  # the train split is 1,311 MB of the file's 1,638 MB
