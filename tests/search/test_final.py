"""The final phase (search cheaply, then train the winner) and --no-search: real sweeps on CPU, real Ray,
real files; and run_final's continuation of a checkpoint, without Ray."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from mmtune.experiment import CheckpointRef, TrialRecord, read_results
from mmtune.search.final import FINAL_TRIAL_ID, FinalStart, reserve_for_test_s, run_final
from mmtune.search.plan import SweepArgs
from mmtune.search.spaces import load_space, parse_space
from mmtune.search.sweep import run_sweep
from mmtune.training.loop import Trainer

REPO = Path(__file__).resolve().parents[2]


def _meta(exp: Path) -> dict:
    return json.loads((exp / "sweep.json").read_text())


@pytest.mark.xdist_group("ray")
def test_the_final_phase_continues_the_best_trial_until_the_budget(tiny_space: Path, tmp_path: Path,
                                                                   capsys) -> None:
    result = run_sweep(SweepArgs(space=str(tiny_space), samples=4, scheduler="fifo", time_budget="120s",
                                 final_share=0.5, storage=str(tmp_path), name="fin", report=False, verbose=0))
    assert result.status == "completed"
    meta = _meta(result.exp_dir)
    final = meta["final"]
    assert final["ran"] and final["share"] == 0.5 and final["threads"] >= 1
    df = read_results(result.exp_dir)
    search, fin = df[df["phase"] == "search"], df[df["phase"] == "final"]
    assert set(fin["trial_id"]) == {FINAL_TRIAL_ID} and len(fin) == final["epochs"] >= 1
    # It continued the search's best trial (lowest val MSE over every epoch), from that epoch's checkpoint:
    best = search.loc[search["val_mse"].idxmin()]
    assert final["source_trial"] == best["trial_id"] and final["source_epoch"] == int(best["epoch"])
    assert final["params"] == {k[len("config/"):]: v for k, v in best.items()
                               if k.startswith("config/") and not pd.isna(v)}
    assert list(fin["epoch"]) == list(range(int(best["epoch"]) + 1, int(best["epoch"]) + 1 + len(fin)))
    assert (fin["resumed_from_epoch"] == int(best["epoch"])).all()
    assert not fin["stopped_early"].any() and not fin["cut_by_budget"].any()
    # Every training is counted: clips and FLOPs per clip on every row, the final phase's included.
    assert (df.loc[df["epoch"] > 0, "train_samples"] > 0).all()
    assert (fin["flops_per_sample"] > 0).all() and fin["train_samples"].sum() == final["train_samples"]
    # The whole sweep, its test split included, within the budget (and Ray's stop).
    assert meta["wall_seconds"] < 120.0 + 10.0
    assert 0.0 < meta["training_share"] <= 1.0
    test = json.loads((result.exp_dir / "test_metrics.json").read_text())
    model = best["model"]
    if fin["val_mse"].min() < search.loc[search["model"] == model, "val_mse"].min():
        assert test[model]["trial_id"] == FINAL_TRIAL_ID  # the final model is what the test split ran on
        assert Path(test[model]["checkpoint"]).is_file() or Path(test[model]["checkpoint"], "state.pt").is_file()
    assert all(math.isfinite(t["test"]["mse_frame"]) for t in test.values())
    out = capsys.readouterr().out
    assert f"final phase: trial {best['trial_id']}'s epoch-{int(best['epoch'])} checkpoint, continued" in out
    assert "of the trials' time in training steps" in out


@pytest.mark.xdist_group("ray")
def test_no_search_trains_the_space_default_config_for_the_whole_budget(tiny_space: Path, tmp_path: Path) -> None:
    t0 = time.time()
    result = run_sweep(SweepArgs(space=str(tiny_space), time_budget="30s", no_search=True, storage=str(tmp_path),
                                 name="none", report=False, verbose=0))
    wall = time.time() - t0
    assert result.status == "completed" and result.num_trials == 1
    meta = _meta(result.exp_dir)
    assert meta["final"]["no_search"] and meta["final"]["source_trial"] is None
    assert meta["final"]["params"] == load_space(tiny_space).default_params()
    df = read_results(result.exp_dir)
    assert set(df["trial_id"]) == {FINAL_TRIAL_ID} and set(df["phase"]) == {"final"}
    assert df["epoch"].min() == 1 and (df["resumed_from_epoch"] == 0).all()  # from scratch
    # It used the budget, but the 15 s it keeps back for the test split, the baselines and the report
    # (tiny here), and kept to it.
    assert 30.0 - 15.0 - 5.0 < wall < 30.0 + 10.0
    assert not (result.exp_dir / "study.db").exists()  # no search ran
    test = json.loads((result.exp_dir / "test_metrics.json").read_text())
    assert list(test) == [load_space(tiny_space).models[0]] and test[load_space(tiny_space).models[0]]["trial_id"] == "final"


TINY_TAU = """
model: conv_tau
shared: {batch_size: 8, epochs: 2}
models:
  conv_tau: {preset: small, hid_S: 8, hid_T: 16, N_T: 1, lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}}
data: {train_size: 16, val_size: 8, test_size: 8, online: true}
"""


def test_run_final_starts_from_the_checkpoint_weights_and_counts_epochs_on(tmp_path: Path, monkeypatch) -> None:
    space = parse_space(__import__("yaml").safe_load(TINY_TAU), "tiny_tau")
    params = space.default_params()
    source = Trainer(space.trial_config(params, {"device": "cpu"}), progress=False)
    source.fit()
    ckpt = tmp_path / "src" / "checkpoint_000002"
    source.save(ckpt / "state.pt", optimizer=False)
    saved = {k: v.clone() for k, v in source.model.state_dict().items()}
    seen: dict[str, dict[str, torch.Tensor]] = {}
    fit = Trainer.fit

    def spy(self, on_epoch=None):
        seen["start"] = {k: v.clone() for k, v in self.model.state_dict().items()}
        return fit(self, on_epoch)

    monkeypatch.setattr(Trainer, "fit", spy)
    start = FinalStart(params, "src", CheckpointRef(str(ckpt), {"epoch": 2, "val_mse": 1.0}, None), 2)
    record = run_final(space, {"device": "cpu"}, start, time.time() + 12.0, 0.0, tmp_path / "exp", threads=1)
    assert isinstance(record, TrialRecord) and record.trial_id == FINAL_TRIAL_ID
    assert all(torch.equal(seen["start"][k], saved[k]) for k in saved)  # continued, not retrained
    epochs = [r["epoch"] for r in record.rows]
    assert epochs[0] == 3 and epochs == list(range(3, 3 + len(epochs)))
    assert all(r["epochs_planned"] == epochs[-1] for r in record.rows)  # planned by time: not stopped early
    assert len(record.checkpoints) == 1 and Path(record.checkpoints[0].path, "state.pt").is_file()
    best_row = min(record.rows, key=lambda r: r["val_mse"])
    assert record.checkpoints[0].metrics["epoch"] == best_row["epoch"]
    assert len(list((tmp_path / "exp" / "trial_final").glob("checkpoint_*"))) == 1  # only the best is kept


def test_run_final_is_skipped_when_too_little_time_is_left(tmp_path: Path, capsys) -> None:
    space = parse_space(__import__("yaml").safe_load(TINY_TAU), "tiny_tau")
    record = run_final(space, {"device": "cpu"}, FinalStart(space.default_params()), time.time() + 5.0, 0.0,
                       tmp_path, threads=1)
    assert record is None
    assert "final phase skipped" in capsys.readouterr().err


def test_the_test_reserve_counts_each_family_but_the_final_one() -> None:
    rows = [{"model": "conv_tau", "infer_ms_per_clip": 40.0}, {"model": "conv_tau", "infer_ms_per_clip": 50.0},
            {"model": "simple_lstm", "infer_ms_per_clip": 2.0}, {"model": "conv_lstm", "infer_ms_per_clip": math.nan}]
    trials = [TrialRecord("a", "TERMINATED", {}, rows, None, "")]
    assert reserve_for_test_s(trials, 1000, threads=1) == pytest.approx(15.0 + 1.2 * (50.0 + 2.0))
    assert reserve_for_test_s(trials, 1000, threads=2) == pytest.approx(15.0 + 1.2 * (50.0 + 2.0) / 1.6)
    assert reserve_for_test_s(trials, 1000, threads=1, skip_model="conv_tau") == pytest.approx(15.0 + 1.2 * 2.0)


def test_the_default_space_is_sized_by_time_and_its_default_config_is_its_centre() -> None:
    space = load_space(REPO / "search_spaces" / "default.yaml")
    assert space.sweep["time_budget"] == "10m" and space.sweep["final_share"] == 0.6
    centre = space.default_params()
    assert centre["model"] == "conv_tau" and centre["conv_tau.flow"] == "none" and centre["conv_tau.N_T"] == 3
    assert centre["conv_tau.lr"] == pytest.approx(math.sqrt(4.0e-3 * 1.2e-2))
    assert centre["conv_tau.kl_weight"] == pytest.approx(0.1)
    cfg = space.trial_config(centre)
    assert (cfg.model_cfg.hid_S, cfg.model_cfg.N_S, cfg.model_cfg.hid_T, cfg.model_cfg.N_T) == (16, 4, 64, 3)
