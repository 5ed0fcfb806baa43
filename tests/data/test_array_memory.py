"""A trial on an array file far larger than what it trains on holds only its windows (issue 26).

Both runs train the same conv_tau on 24+4+4 windows of 4+4 frames of 128x128; one reads them from a
sparse 4.2 GB .npy (windows every 8,000 frames of 32,000-frame clips), the other from a 4 MB file
of the same windows. The file is checked whole on opening (in chunks), then read window by window.
Measured on a 2-core AMD EPYC (fp32): 1,263 MB peak RSS on the big file, 1,238 MB on the small one;
with the file read whole instead of mapped (to see the test fail), 8,743 MB.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

RUN = """
import sys
from mmtune.cli import main
rc = main(sys.argv[1:])
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))  # peak RSS since exec
print(rc, int(hwm.split()[1]) // 1024)
"""


def _peak_mb(data: Path, stride: int, out: Path) -> int:
    args = ["train", "--data", str(data), "--layout", "NTCHW", "--t-in", "4", "--t-out", "4", "--stride", str(stride),
            "--val-fraction", "0.125", "--test-fraction", "0.125", "--model", "conv_tau", "--preset", "small",
            "--epochs", "1", "--batch-size", "4", "--device", "cpu", "--quiet", "--out", str(out)]
    r = subprocess.run([sys.executable, "-c", RUN, *args], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rc, peak = map(int, r.stdout.split()[-2:])
    assert rc == 0 and "24 train sequences of 4+4 frames of 1x128x128" in r.stderr, r.stderr[-2000:]
    return peak


def test_a_trial_on_a_sparse_4_gb_file_holds_no_more_than_on_a_small_one(tmp_path: Path) -> None:
    big = tmp_path / "big.npy"
    shape = (8, 32_000, 1, 128, 128)  # 4.19 GB of uint8: header + holes, nothing on disk
    with open(big, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": shape})
        f.truncate(f.tell() + int(np.prod(shape)))
    small = tmp_path / "small.npy"
    np.save(small, np.zeros((8, 32, 1, 128, 128), np.uint8))  # the same 4 windows per clip, stride 8
    peak_big = _peak_mb(big, 8_000, tmp_path / "big_run")
    peak_small = _peak_mb(small, 8, tmp_path / "small_run")
    print(f"peak RSS: {peak_big} MB on the 4.2 GB file, {peak_small} MB on the 4 MB one")
    assert peak_big < peak_small + 256, (peak_big, peak_small)
    assert peak_big < big.stat().st_size / 2**20 / 2, peak_big
