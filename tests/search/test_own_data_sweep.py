"""A real sweep (Ray + Optuna) over your own array file, and its report: the records keep the clip spec."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mmtune.report import build_report
from mmtune.report._leaderboard import get_baseline_info, get_reference_info
from mmtune.report._load import load_experiment
from mmtune.search.plan import SweepArgs
from mmtune.search.sweep import run_sweep

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]  # about a minute on 2 cores; one Ray sweep at a time

SPACE = """
model: simple_lstm
shared: {lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}, batch_size: 4, epochs: 1}
models: {simple_lstm: {preset: small}}
data: {path: clips.npy, t_in: 8, t_out: 8, val_fraction: 0.2, test_fraction: 0.2}
"""


def test_a_sweep_over_a_two_channel_array_and_its_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    clips = np.zeros((10, 16, 2, 16, 24), np.uint8)
    for i in range(10):
        for t in range(16):
            clips[i, t, 0, 4:10, (i + t) % 20 : (i + t) % 20 + 4] = 255
    np.save("clips.npy", clips)
    (tmp_path / "space.yaml").write_text(SPACE)
    result = run_sweep(SweepArgs(space="space.yaml", samples=2, scheduler="fifo", max_concurrent=1,
                                 storage=str(tmp_path / "sweeps"), name="own", report=False, verbose=0))
    assert result.status == "completed"
    exp = result.exp_dir
    meta = json.loads((exp / "sweep.json").read_text())
    assert meta["clip_spec"] == {"t_in": 8, "t_out": 8, "channels": 2, "height": 16, "width": 24}
    test = json.loads((exp / "test_metrics.json").read_text())["simple_lstm"]
    assert test["units"]["mse_frame"].startswith("per-frame MSE: sum over 2x16x24 values")
    assert len(test["test"]["mse_frame_per_step"]) == 8
    assert test["vs_best_baseline"]["pixels"] == 2 * 16 * 24  # the sweep's verdict is the train's (one step)
    with np.load(exp / "predictions" / "simple_lstm.npz") as z:
        assert z["pred"].shape[1:] == (8, 2, 16, 24)
    e = load_experiment(exp)
    ref = get_reference_info(e)
    assert all(r.kind != "published" for r in ref.rows)  # Moving MNIST's numbers do not apply
    assert any("clips are 8+8 frames of 2x16x24" in n for n in ref.notes)
    assert get_baseline_info(e).verdicts["simple_lstm"].pixels == 768
    html = build_report(exp, tmp_path / "report.html").read_text()
    assert "MSE/frame × 65025 / 768" in html
