"""`mmtune train --help` names every default."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from mmtune.data.datasets import DataConfig
from mmtune.training.config import TrainConfig

REPO = Path(__file__).resolve().parents[2]


def _train_help() -> dict[str, str]:
    """Each option of `mmtune train` -> its help text, one line."""
    from mmtune.cli.train import add_parser as add_train_parser

    sub = argparse.ArgumentParser().add_subparsers()
    add_train_parser(sub)
    return {opt: " ".join(str(a.help).split()) for a in sub.choices["train"]._actions for opt in a.option_strings}


def test_train_help_names_the_defaults_training_uses() -> None:
    """The defaults `mmtune train --help` names are the ones a run gets: TrainConfig's and DataConfig's
    (a default changed in one place and not the other fails here)."""
    t, d = TrainConfig(), DataConfig()
    helps = _train_help()
    expected = {"--epochs": t.epochs, "--batch-size": t.batch_size, "--lr": f"{t.lr:g}",
                "--weight-decay": f"{t.weight_decay:g}", "--optimizer": t.optimizer, "--scheduler": t.scheduler,
                "--seed": t.seed, "--device": t.device, "--num-digits": d.num_digits, "--digits": d.digits,
                "--train-size": d.train_size, "--val-size": d.val_size, "--test-size": d.test_size}
    for flag, value in expected.items():
        assert f"default {value}" in helps[flag] or f"{value}, default" in helps[flag] or \
            f"{value} (offline, default)" in helps[flag], (flag, value, helps[flag])
    for flag in ("--model", "--kl-weight", "--flow", "--out", "--overwrite"):
        assert "default" in helps[flag], flag


def test_train_help_runs_as_a_command() -> None:
    out = subprocess.run([sys.executable, "-m", "mmtune", "train", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and "--batch-size" in out.stdout
