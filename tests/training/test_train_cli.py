"""`mmtune train --help` names every default."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_train_help_names_every_default() -> None:
    out = subprocess.run([sys.executable, "-m", "mmtune", "train", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=120).stdout
    out = " ".join(out.split())  # argparse wraps lines where it likes
    for default in ("(default conv_tau)", "(default 5, or the protocol's)", "(default 0.001, or the preset's)",
                    "(default adamw, or the preset's)", "(default onecycle, or the preset's)", "(default 0)",
                    "(default auto)", "(default none, or the preset's)", "(default 2)", "(default: the model's)",
                    "(default off: an --out holding test_metrics.json, history.json, last.pt, best.pt or strip.png "
                    "is refused)"):
        assert default in out, default
