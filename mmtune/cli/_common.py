"""What several subcommands' parsers share: KEY=VALUE parsing and the --tracker flag."""

from __future__ import annotations

import argparse
from typing import Any


def kv(text: str) -> tuple[str, Any]:
    """Parse KEY=VALUE with a YAML scalar value (3 -> int, 0.5 -> float, true -> bool)."""
    import yaml

    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value)


def add_tracker_argument(p: argparse.ArgumentParser, what: str, how: str) -> None:
    """`--tracker NAME[=VALUE]` (repeatable), shared by `mmtune search`, `train` and `report`."""
    p.add_argument("--tracker", action="append", default=[], metavar="mlflow[=URI]|wandb[=PROJECT]",
                   help=f"also log the {what} to MLflow or Weights & Biases ({how}), from the files it writes, "
                        f"once it ends (a sweep's trials log to an MLflow tracking server themselves, live, "
                        f"from their nodes); repeatable; a run logged again is updated, not doubled. "
                        f"mlflow: a tracking URI or a SQLite file path (default: "
                        f"mlflow.db in the {what}'s folder, open it with mlflow ui --backend-store-uri "
                        f"sqlite:///PATH); wandb: offline runs in the folder's wandb/ (wandb sync uploads "
                        f"them), in PROJECT (default mmtune). Each needs its extra: pip install "
                        f"'mmtune[mlflow]' or 'mmtune[wandb]' (default: none, TensorBoard only)")
