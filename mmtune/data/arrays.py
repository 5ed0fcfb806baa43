"""Your own clips: an (N, T, C, H, W) array in a .npy, .npz or HDF5 file, read lazily window by window.

A file is opened, never loaded: a .npy (and an .npz member stored uncompressed, as `np.savez`
writes it) is memory-mapped, an HDF5 dataset is read by slices. A batch reads only its windows,
so a file larger than memory trains. Before training, the whole file is checked once, in chunks:
a bad value (NaN, inf, outside 0-255 or [0, 1]) is one line naming the file.

Layouts: NTCHW, NTHWC, NTHW (one channel) and TNHW (the standard `mnist_test_seq.npy`,
(20, 10000, 64, 64) uint8). The layout is detected when only one reading fits the clip length
and channel axis; otherwise one line asks for it.

Example:
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "clips.npy")
    >>> np.save(path, np.zeros((10, 16, 2, 24, 32), np.uint8))
    >>> data = ArrayDataset(ArrayDataConfig(path=path, t_in=8, t_out=8, val_fraction=0.2, test_fraction=0.2))
    >>> data.spec.describe(), data.frames("train").shape
    ('8+8 frames of 2x24x32', (6, 16, 2, 24, 32))
"""

from __future__ import annotations

import functools
import math
import mmap
import os
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmtune.data.spec import ClipSpec, from_known_keys
from mmtune.errors import MMTuneError

LAYOUTS = ("NTCHW", "NTHWC", "NTHW", "TNHW")
SPLITS = ("train", "val", "test")
NPY_SUFFIXES, NPZ_SUFFIXES, HDF5_SUFFIXES = (".npy",), (".npz",), (".h5", ".hdf5", ".he5")
CHUNK_BYTES = 64 * 2**20  # the value check reads the file in pieces of about this size


@dataclass(frozen=True)
class ArrayDataConfig:
    """Which array file(s) a run reads, and how they are cut into clips.

    Either `path` alone (one array, its clips split into train/val/test by seeded fractions of
    whole clips), or `train`, `val` and `test` (one array per split: files, or keys of the .npz or
    HDF5 file `path`).

    Args:
        path: The file (.npy, .npz, .h5/.hdf5).
        layout: One of LAYOUTS; None detects it.
        key: The array of an .npz or HDF5 `path` (None: its only one).
        train: The train split's file (or key of `path`); with `val` and `test`.
        val: The val split's file or key.
        test: The test split's file or key.
        t_in: Input frames of a clip.
        t_out: Target frames of a clip.
        stride: Frames between the starts of two windows of a longer clip (None: t_in + t_out).
        val_fraction: Share of the clips in val (one file only).
        test_fraction: Share of the clips in test (one file only).
        seed: Seed of the split.
    """

    path: str | None = None
    layout: str | None = None
    key: str | None = None
    train: str | None = None
    val: str | None = None
    test: str | None = None
    t_in: int = 10
    t_out: int = 10
    stride: int | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        per_split = [getattr(self, s) for s in SPLITS]
        if any(per_split) and not all(per_split):
            missing = [s for s in SPLITS if not getattr(self, s)]
            raise MMTuneError(f"data: give train, val and test together (one array per split); missing {missing}")
        if not self.path and not all(per_split):
            raise MMTuneError("data: give path (one array file) or train, val and test (one per split)")
        if self.layout is not None and self.layout not in LAYOUTS:
            raise MMTuneError(f"layout must be one of {list(LAYOUTS)}, got {self.layout!r}")
        for name in ("t_in", "t_out"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise MMTuneError(f"{name} must be a positive integer, got {value!r}")
        if self.stride is not None and (isinstance(self.stride, bool) or not isinstance(self.stride, int)
                                        or self.stride < 1):
            raise MMTuneError(f"stride must be a positive integer or None, got {self.stride!r}")
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
                raise MMTuneError(f"{name} must be a number in (0, 1), got {value!r}")
        if self.val_fraction + self.test_fraction >= 1:
            raise MMTuneError(f"val_fraction + test_fraction must be below 1 (train keeps the rest), "
                              f"got {self.val_fraction} + {self.test_fraction}")

    # The fields a run on generated Moving MNIST has, so that code reading a DataConfig reads this too.
    online = False
    test_file = None

    @property
    def frames_needed(self) -> int:
        """Frames of one window, t_in + t_out."""
        return self.t_in + self.t_out

    @property
    def window_stride(self) -> int:
        """The stride, its default filled in."""
        return self.stride or self.frames_needed

    def sources(self) -> dict[str, tuple[str, str | None]]:
        """{name: (file, key)} of each array: "all" for one file, else one per split."""
        if self.train and self.val and self.test:
            if self.path:
                return {s: (self.path, getattr(self, s)) for s in SPLITS}
            return {s: (getattr(self, s), self.key) for s in SPLITS}
        assert self.path is not None  # __post_init__
        return {"all": (self.path, self.key)}

    @property
    def spec(self) -> ClipSpec:
        """The clip spec of this data (read from the file headers; no value is read)."""
        shapes = {name: _header(f, k, self.layout, self.frames_needed)[1] for name, (f, k) in self.sources().items()}
        frame_shapes = {s[2:] for s in shapes.values()}
        if len(frame_shapes) > 1:
            raise MMTuneError(f"data: the splits' frames differ in (C, H, W): "
                              f"{', '.join(f'{n} {s[2:]}' for n, s in shapes.items())}")
        c, h, w = next(iter(frame_shapes))
        return ClipSpec(self.t_in, self.t_out, c, h, w)

    def split_sizes(self) -> dict[str, int]:
        """Windows in each split (from the file headers)."""
        return {s: len(w) for s, (_, w) in _split_windows(self).items()}

    @property
    def train_size(self) -> int:
        """Windows in the train split."""
        return self.split_sizes()["train"]

    @property
    def val_size(self) -> int:
        """Windows in the val split."""
        return self.split_sizes()["val"]

    @property
    def test_size(self) -> int:
        """Windows in the test split."""
        return self.split_sizes()["test"]

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ArrayDataConfig:
        """Build from a dict, rejecting unknown keys by name."""
        return from_known_keys(cls, values, "array data")


def absolute_paths(values: dict[str, Any]) -> dict[str, Any]:
    """An array data section with its file paths made absolute (a Ray trial runs in another folder).

    The split entries are files only without `path`; with it they are keys of that file.
    """
    out = dict(values)
    names = ["path"] if values.get("path") else list(SPLITS)
    for name in names:
        if isinstance(out.get(name), str):
            out[name] = str(Path(out[name]).expanduser().resolve())
    return out


# ---------------------------------------------------------------------------------------------
# Opening a file: one line for every way it can be wrong.


def _open(path: str, key: str | None) -> Any:
    """The raw array of `path` (a memmap, ndarray or h5py Dataset), nothing read yet."""
    p = Path(path)
    if not p.is_file():
        raise MMTuneError(f"data file {path} does not exist")
    suffix = p.suffix.lower()
    if suffix in NPY_SUFFIXES:
        if key is not None:
            raise MMTuneError(f"data file {path}: a .npy holds one array; drop the key {key!r}")
        with open(p, "rb") as f:
            return _npy_at(f, path, 0, p.stat().st_size, path)
    if suffix in NPZ_SUFFIXES:
        return _open_npz(path, key)
    if suffix in HDF5_SUFFIXES:
        return _open_hdf5(path, key)
    raise MMTuneError(f"data file {path}: unsupported type {suffix or '(no suffix)'}; "
                      f"expected .npy, .npz, .h5 or .hdf5")


def _npy_at(f: Any, path: str, start: int, end: int, what: str) -> np.ndarray:
    """Memory-map the .npy whose bytes lie in [start, end) of the open file `f` (a member of an .npz, or all)."""
    f.seek(start)
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    except (ValueError, OSError, struct.error) as exc:
        raise MMTuneError(f"data file {what} is not a readable .npy array ({_first(exc)}); is it truncated?") from None
    if dtype.hasobject:
        raise MMTuneError(f"data file {what} holds a ragged (object) array; clips must share one shape (N, T, ...)")
    offset = f.tell()
    need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if end - offset < need:
        raise MMTuneError(f"data file {what} is truncated: its header says {shape} {dtype} ({need:,} bytes), "
                          f"the file holds {max(end - offset, 0):,}")
    if need == 0:
        return np.zeros(shape, dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


def _open_npz(path: str, key: str | None) -> np.ndarray:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise MMTuneError(f"data file {path} is not a readable .npz ({_first(exc)}); is it truncated?") from None
    with archive:
        names = [n[:-4] for n in archive.namelist() if n.endswith(".npy")]
        key = _pick_key(path, key, names, "array")
        info = archive.getinfo(key + ".npy")
        if info.compress_type == zipfile.ZIP_STORED:  # np.savez: map the member's bytes in place
            with open(path, "rb") as f:
                f.seek(info.header_offset)
                local = f.read(30)
                if len(local) < 30:
                    raise MMTuneError(f"data file {path} is truncated (member {key})")
                name_len, extra_len = struct.unpack("<HH", local[26:30])
                start = info.header_offset + 30 + name_len + extra_len
                return _npy_at(f, path, start, start + info.file_size, f"{path} (array {key})")
        try:  # np.savez_compressed: a compressed member cannot be mapped, so it is read whole
            with archive.open(info) as member:
                return np.lib.format.read_array(member, allow_pickle=False)
        except ValueError as exc:
            if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
                raise MMTuneError(f"data file {path} (array {key}) holds a ragged (object) array; "
                                  f"clips must share one shape") from None
            raise MMTuneError(f"data file {path} (array {key}) is not readable ({_first(exc)})") from None
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise MMTuneError(f"data file {path} (array {key}) is truncated ({_first(exc)})") from None


def _open_hdf5(path: str, key: str | None) -> Any:
    try:
        import h5py
    except ImportError:
        raise MMTuneError(f"data file {path} is HDF5, which needs h5py: pip install 'mmtune[hdf5]'") from None
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise MMTuneError(f"data file {path} is not a readable HDF5 file ({_first(exc)}); is it truncated?") from None
    names: list[str] = []
    f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    key = _pick_key(path, key, names, "dataset")
    ds = f[key]
    if ds.dtype.hasobject or h5py.check_vlen_dtype(ds.dtype) is not None:
        raise MMTuneError(f"data file {path} (dataset {key}) holds ragged (variable-length) values; "
                          f"clips must share one shape")
    return ds


def _pick_key(path: str, key: str | None, names: list[str], what: str) -> str:
    if key is None:
        if len(names) == 1:
            return names[0]
        raise MMTuneError(f"data file {path} holds {len(names)} {what}s {sorted(names)}; name one (--data-key)")
    if key not in names:
        raise MMTuneError(f"data file {path} has no {what} {key!r}; it holds {sorted(names)}")
    return key


def _first(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:160]


# ---------------------------------------------------------------------------------------------
# Layouts.


def detect_layout(shape: tuple[int, ...], frames_needed: int, what: str) -> str:
    """The one layout that `shape` can have, for clips of `frames_needed` frames; else one line.

    4-D: NTHW needs T = shape[1] >= frames_needed, TNHW needs shape[0] >= frames_needed.
    5-D: the channel axis (NTCHW's axis 2, NTHWC's axis 4) must be smaller than H and W.
    """
    if len(shape) == 4:
        fits = [lay for lay, t in (("NTHW", shape[1]), ("TNHW", shape[0])) if t >= frames_needed]
    elif len(shape) == 5:
        fits = []
        if shape[2] < min(shape[3], shape[4]):
            fits.append("NTCHW")
        if shape[4] < min(shape[2], shape[3]):
            fits.append("NTHWC")
    else:
        raise MMTuneError(f"data file {what} is {len(shape)}-D {tuple(shape)}; clips need 4 or 5 axes, "
                          f"one of {list(LAYOUTS)}")
    if len(fits) == 1:
        return fits[0]
    if not fits and len(shape) == 4:
        raise MMTuneError(f"data file {what} {tuple(shape)}: clips have fewer frames than t_in + t_out = "
                          f"{frames_needed} (neither axis 0 nor 1 holds that many)")
    readings = " or ".join(fits) if fits else "no layout's channel axis is smaller than H and W"
    raise MMTuneError(f"data file {what} {tuple(shape)}: the layout is ambiguous ({readings}); "
                      f"give it with --layout, one of {list(LAYOUTS)}")


def to_ntchw(shape: tuple[int, ...], layout: str) -> tuple[int, int, int, int, int]:
    """The (N, T, C, H, W) shape of an array of `shape` in `layout`."""
    if len(shape) != len(layout):
        raise MMTuneError(f"layout {layout} needs {len(layout)} axes, the array has {len(shape)} {tuple(shape)}")
    d = dict(zip(layout, shape, strict=True))
    return d["N"], d["T"], d.get("C", 1), d["H"], d["W"]


@functools.lru_cache(maxsize=64)
def _header_cached(path: str, key: str | None, layout: str | None, frames_needed: int,
                   stamp: tuple[float, int]) -> tuple[str, tuple[int, int, int, int, int], str]:
    raw = _open(path, key)
    what = path if key is None else f"{path} ({key})"
    shape = tuple(int(s) for s in raw.shape)
    if len(shape) not in (4, 5):
        detect_layout(shape, frames_needed, what)  # raises: the 3-D (or 6-D) line
    lay = layout or detect_layout(shape, frames_needed, what)
    ntchw = to_ntchw(shape, lay)
    if ntchw[1] < frames_needed:
        raise MMTuneError(f"data file {what}: clips of {ntchw[1]} frames are fewer than t_in + t_out = "
                          f"{frames_needed}")
    if ntchw[0] < 1:
        raise MMTuneError(f"data file {what} holds no clips {shape}")
    dtype = np.dtype(raw.dtype)
    if not (dtype.kind in "ui" or dtype.kind == "f"):
        raise MMTuneError(f"data file {what} is {dtype}; expected uint8 (0-255) or float in [0, 1]")
    return lay, ntchw, dtype.str


def _header(path: str, key: str | None, layout: str | None, frames_needed: int):
    """(layout, (N, T, C, H, W), dtype) of an array, from its header; cached while the file is unchanged."""
    try:
        st = os.stat(path)
        stamp = (st.st_mtime, st.st_size)
    except OSError:
        stamp = (0.0, 0)
    return _header_cached(path, key, layout, frames_needed, stamp)


# ---------------------------------------------------------------------------------------------
# Reading clips.


class ArraySource:
    """One opened array, read as (N, T, C, H, W) float32 in [0, 1], a window at a time."""

    def __init__(self, path: str, key: str | None, layout: str | None, frames_needed: int) -> None:
        self.what = path if key is None else f"{path} ({key})"
        self.layout, self.shape, dtype = _header(path, key, layout, frames_needed)
        self.dtype = np.dtype(dtype)
        self.raw = _open(path, key)
        self._touched = 0  # bytes read from a memory map since its pages were last handed back

    def _release(self, nbytes: int) -> None:
        """Hand a memory map's read pages back to the page cache every CHUNK_BYTES read.

        Mapped pages that were read count in the process's RSS until the kernel reclaims them; an
        epoch over a file larger than memory would show the whole file as resident. MADV_DONTNEED
        drops them from this process (the page cache keeps them), so the RSS stays bounded.
        """
        self._touched += nbytes
        mm = getattr(self.raw, "_mmap", None)
        if self._touched < CHUNK_BYTES or mm is None or not hasattr(mmap, "MADV_DONTNEED"):
            return
        self._touched = 0
        mm.madvise(mmap.MADV_DONTNEED)

    def window(self, clip: int, start: int, length: int) -> np.ndarray:
        """Frames start .. start+length-1 of one clip, (length, C, H, W) float32 in [0, 1]."""
        lay = self.layout
        if lay == "TNHW":
            a = np.asarray(self.raw[start : start + length, clip])[:, None]
        else:
            a = np.asarray(self.raw[clip, start : start + length])
            if lay == "NTHW":
                a = a[:, None]
            elif lay == "NTHWC":
                a = a.transpose(0, 3, 1, 2)
        out = a.astype(np.float32) / np.float32(255.0) if self.dtype.kind in "ui" else a.astype(np.float32, copy=True)
        self._release(a.nbytes)
        return out

    def check_values(self) -> None:
        """Read the whole array once, in chunks: NaN, inf or values outside 0-255 / [0, 1] are one line."""
        if self.dtype == np.uint8:
            return  # every byte is a pixel
        rows = max(1, CHUNK_BYTES // max(1, int(np.prod(self.raw.shape[1:])) * self.dtype.itemsize))
        low, high = (0, 255) if self.dtype.kind in "ui" else (0.0, 1.0)
        for lo in range(0, self.raw.shape[0], rows):
            chunk = np.asarray(self.raw[lo : lo + rows])
            self._release(chunk.nbytes)
            if self.dtype.kind == "f" and not np.isfinite(chunk).all():
                bad = "NaN" if np.isnan(chunk).any() else "inf"
                raise MMTuneError(f"data file {self.what} holds {bad} values; clips must be finite")
            cmin, cmax = chunk.min(), chunk.max()
            if cmin < low or cmax > high:
                scale = "0-255" if self.dtype.kind in "ui" else "[0, 1]"
                raise MMTuneError(f"data file {self.what} holds values outside {scale} for its {self.dtype} "
                                  f"(min {cmin:g}, max {cmax:g}); give uint8 0-255 or float in [0, 1]")


def _windows(n_frames: int, clips: np.ndarray, length: int, stride: int) -> np.ndarray:
    """(W, 2) int64 [clip, start] of every window of every clip in `clips`."""
    starts = np.arange(0, n_frames - length + 1, stride, dtype=np.int64)
    return np.stack(np.broadcast_arrays(clips[:, None], starts[None, :]), axis=-1).reshape(-1, 2)


def split_clips(n: int, val_fraction: float, test_fraction: float, seed: int, what: str) -> dict[str, np.ndarray]:
    """Clip indices of each split: whole clips, shuffled by `seed`, at least one per split."""
    n_val, n_test = max(1, round(n * val_fraction)), max(1, round(n * test_fraction))
    if n - n_val - n_test < 1:
        raise MMTuneError(f"data file {what} holds {n} clips, too few for train/val/test "
                          f"({val_fraction:g} val, {test_fraction:g} test); give more clips or one file per split")
    perm = np.random.default_rng(seed).permutation(n)
    return {"test": np.sort(perm[:n_test]), "val": np.sort(perm[n_test : n_test + n_val]),
            "train": np.sort(perm[n_test + n_val :])}


def _split_windows(cfg: ArrayDataConfig) -> dict[str, tuple[str, np.ndarray]]:
    """{split: (source name, windows)} from the headers alone."""
    f = cfg.frames_needed
    heads = {name: _header(p, k, cfg.layout, f) for name, (p, k) in cfg.sources().items()}
    if "all" in heads:
        n, t = heads["all"][1][:2]
        what = cfg.path if cfg.key is None else f"{cfg.path} ({cfg.key})"
        clips = split_clips(n, cfg.val_fraction, cfg.test_fraction, cfg.seed, str(what))
        return {s: ("all", _windows(t, clips[s], f, cfg.window_stride)) for s in SPLITS}
    return {s: (s, _windows(heads[s][1][1], np.arange(heads[s][1][0]), f, cfg.window_stride)) for s in SPLITS}


class Windows:
    """The windows of one split: `len()`, `.shape` and `[idx]` -> (B, t_in+t_out, C, H, W) float32 in [0, 1]."""

    def __init__(self, source: ArraySource, index: np.ndarray, length: int) -> None:
        self.source, self.index, self.length = source, index, length
        _, _, c, h, w = source.shape
        self.shape = (len(index), length, c, h, w)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, idx: Any) -> np.ndarray:
        rows = self.index[idx]
        rows = rows.reshape(-1, 2)
        out = np.empty((len(rows), *self.shape[1:]), np.float32)
        for i, (clip, start) in enumerate(rows):
            out[i] = self.source.window(int(clip), int(start), self.length)
        return out


class ArrayDataset:
    """The three splits of an ArrayDataConfig; the file is checked whole (in chunks) when opened.

    `frames(split)` gives a `Windows` (read on demand), where `MovingMNIST.frames` gives a uint8 array.
    """

    def __init__(self, cfg: ArrayDataConfig) -> None:
        self.cfg = cfg
        self.spec = cfg.spec  # the shapes and the splits' frame sizes agree, or one line
        f = cfg.frames_needed
        self.sources = {name: ArraySource(p, k, cfg.layout, f) for name, (p, k) in cfg.sources().items()}
        for source in self.sources.values():
            source.check_values()
        self._windows = _split_windows(cfg)

    def frames(self, split: str, epoch: int = 0) -> Windows:
        """The windows of a split, (N, t_in+t_out, C, H, W) float32 in [0, 1] when indexed."""
        if split not in SPLITS:
            raise MMTuneError(f"split must be one of {list(SPLITS)}, got {split!r}")
        name, index = self._windows[split]
        return Windows(self.sources[name], index, self.cfg.frames_needed)


def mean_intensity(frames: Windows, batch: int = 256) -> float:
    """Mean value in [0, 1] of every window of a split, read in batches."""
    total, count = 0.0, 0
    for lo in range(0, len(frames), batch):
        chunk = frames[np.arange(lo, min(lo + batch, len(frames)))]
        total += float(chunk.sum(dtype=np.float64))
        count += chunk.size
    return total / max(count, 1) if count else math.nan
