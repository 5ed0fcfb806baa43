"""What a trial reports each epoch: the cost beside the metrics, from a real tiny Trainer."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest

from mmtune.experiment import COST_COLUMNS, FLOPS, TrialRecord, results_frame
from mmtune.search import trial_log
from mmtune.search.trial_log import TrialLog
from mmtune.training.config import build_trial
from mmtune.training.loop import EpochResult, Trainer

TRAIN_SIZE = 8
NODE = {"node_ip": "127.0.0.1", "hostname": "here", "node_id": "n0"}


def _trainer(model: str = "simple_lstm", epochs: int = 2) -> Trainer:
    trial = build_trial(model, "small", train_overrides={"epochs": epochs, "batch_size": 4, "device": "cpu"},
                        data_overrides={"train_size": TRAIN_SIZE, "val_size": 4, "test_size": 4})
    return Trainer(trial, progress=False)


def _counting(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    """Count the calls of trial_log's `name` (a cost function), still calling it."""
    calls: list[int] = []
    real = getattr(trial_log, name)

    def spy(*a: Any, **k: Any) -> Any:
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(trial_log, name, spy)
    return calls


def test_every_row_carries_the_cost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    static, infer = _counting(monkeypatch, "static_cost"), _counting(monkeypatch, "infer_ms_per_clip")
    trainer = _trainer()
    log = TrialLog(trainer.trial, str(tmp_path / "tb"), NODE)
    tags: list[str] = []
    real_add = log.writer.add_scalar
    monkeypatch.setattr(log.writer, "add_scalar", lambda tag, *a, **k: (tags.append(tag), real_add(tag, *a, **k)))
    rows: list[dict[str, Any]] = []
    trainer.fit(lambda result, tr: rows.append(log.epoch(result, tr)))
    log.close()

    # counted once per trial; on a CPU the inference time is the first validation's, with no passes of its own
    assert len(rows) == 2 and static == [1] and infer == []
    # the FLOPs by hand from simple_lstm's layer sizes (derived in tests/training/test_cost.py::
    # test_simple_lstm_flops_by_hand), not by count_train_flops, which the row's number comes from
    c = trainer.trial.model_cfg
    assert c.num_layers == 1
    steps = c.t_in + c.t_out - 1
    forward = (steps * 2 * (c.pixels * c.dense1 + c.dense1 * c.dense2)  # encoder
               + steps * 8 * (c.dense2 + c.hidden) * c.hidden  # LSTM
               + c.t_out * 2 * (c.hidden * c.dense2 + c.dense2 * c.dense1 + c.dense1 * c.pixels))  # decoder
    flops = 3 * forward - 2 * c.t_in * c.pixels * c.dense1 - 8 * c.hidden**2
    for row in rows:
        assert all(math.isfinite(row[k]) and row[k] > 0 for k in COST_COLUMNS), {k: row[k] for k in COST_COLUMNS}
        assert isinstance(row["params"], int)
        assert row["params"] == sum(p.numel() for p in trainer.model.parameters())
        assert row[FLOPS] == flops
        # this epoch's samples over its own training seconds (not the epoch's, nor the trial's so far)
        assert row["train_samples_per_s"] == pytest.approx(TRAIN_SIZE / row["train_seconds"])
    val_clips = trainer.trial.data.val_size
    assert 0 < rows[0]["infer_ms_per_clip"] == rows[1]["infer_ms_per_clip"] < 1000 * rows[0]["epoch_seconds"] / val_clips
    assert tags.count("speed/train_samples_per_s") == 2 and tags.count("speed/infer_ms_per_clip") == 2


def test_speed_by_hand_and_a_diverged_epoch_keeps_its_counted_cost(tmp_path: Path) -> None:
    trainer = _trainer("conv_tau")
    log = TrialLog(trainer.trial, str(tmp_path / "tb"), NODE)
    diverged = EpochResult(1, math.nan, {"mse_frame": math.nan}, seconds=5.0, train_seconds=2.0, status="diverged")
    row = log.epoch(diverged, trainer)
    assert row["diverged"] and row["params"] > 0 and row[FLOPS] > row["params"]
    assert math.isnan(row["train_samples_per_s"]) and math.isnan(row["infer_ms_per_clip"])  # stopped part-way
    ok = dataclasses.replace(diverged, epoch=2, val={"mse_frame": 50.0}, status="ok")
    row = log.epoch(ok, trainer)
    assert row["train_samples_per_s"] == TRAIN_SIZE / 2.0  # 2.0 training seconds; the epoch took 5.0
    assert row["infer_ms_per_clip"] > 0  # timed at the first healthy epoch
    log.close()


def test_a_log_that_never_measured_reports_no_cost(tmp_path: Path) -> None:
    """`row` alone (no trainer seen) says it knows no cost rather than inventing one."""
    log = TrialLog(_trainer().trial, str(tmp_path / "tb"), NODE)
    row = log.row(EpochResult(1, 0.1, {"mse_frame": 50.0}, 5.0, 2.0))
    assert row["params"] == 0 and math.isnan(row[FLOPS]) and math.isnan(row["infer_ms_per_clip"])
    log.close()


def test_the_cost_reaches_results_parquet(tmp_path: Path) -> None:
    trainer = _trainer(epochs=1)
    log = TrialLog(trainer.trial, str(tmp_path / "tb"), NODE)
    rows: list[dict[str, Any]] = []
    trainer.fit(lambda result, tr: rows.append(log.epoch(result, tr)))
    df = results_frame([TrialRecord("a", "TERMINATED", {"model": "simple_lstm"}, rows, None, "/x")])
    assert all(c in df for c in COST_COLUMNS)
