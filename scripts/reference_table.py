"""Print the README's reference-protocol table from the committed runs in reports/reference-cpu/*/.

    .venv/bin/python scripts/reference_table.py

Each run folder holds `mmtune train`'s train.json and test_metrics.json (runs written before
2026-12-04 hold one test_metrics.json with both) and run.json (command, wall time, hardware; from
scripts/reference_cpu.sh). The reference numbers are the per-pixel (0-255) MSEs of
Colonna & Manganaro (2023) at the same protocol.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "reports" / "reference-cpu"
REFERENCE = {"simple_lstm": ("SimpleLSTM", 2478.0), "conv_lstm": ("ConvLSTM", 1927.0),
             "conv_tau": ("ConvTAU", 1647.0), "conv_tau+flow": ("ConvTAU+flow", 1520.0)}
CONFIG_KEYS = {"simple_lstm": ("dense1", "dense2", "hidden"), "conv_lstm": ("n_f", "hidden", "kernel_size"),
               "conv_tau": ("hid_S", "hid_T", "N_S", "N_T")}


def _load(folder: Path) -> tuple[str, dict, dict, dict, int]:
    """(model, config, test metrics, verdict, best epoch) of a `mmtune train` folder."""
    m = json.loads((folder / "test_metrics.json").read_text())
    if (folder / "train.json").is_file():  # the sweep's schema: {model: TestResult}, the rest in train.json
        rec = json.loads((folder / "train.json").read_text())
        tested = m[rec["model"]]
        return rec["model"], rec["config"], tested["test"], tested["vs_best_baseline"], rec["best_epoch"]
    return m["model"], m["config"], m["test"], m["vs_best_baseline"], m["best_epoch"]


def _row(folder: Path) -> str:
    model, config_, test, vs, best_epoch = _load(folder)
    run = json.loads((folder / "run.json").read_text())
    train, cfg = config_["train"], config_["model_cfg"]
    flow = train.get("flow", "none")
    ref_name, ref = REFERENCE["conv_tau+flow" if model == "conv_tau" and flow != "none" else model]
    knobs = ", ".join(f"{k} {cfg[k]}" for k in CONFIG_KEYS.get(model, ()) if k in cfg)
    kl = "" if train.get("kl_weight") is None else f", kl {train['kl_weight']:.3g}"
    config = f"{model} {knobs}, lr {train['lr']:.3g}{kl}, flow {flow}"
    return (f"| {folder.name} | {test['mse_frame']:.2f} | {test['mse_pixel255']:.1f} | {ref_name} {ref:.0f} | "
            f"{test['mse_pixel255'] / ref:.2f} | {vs['baseline']} {vs['baseline_mse']:.2f} | {vs['ratio']:.2f} | "
            f"{config} | {train['epochs']} (best {best_epoch}) | {run['cpu']}, {run['threads']} thread(s) | "
            f"{run['wall_seconds']} s |")


def main() -> int:
    folders = sorted(p for p in ROOT.iterdir() if (p / "test_metrics.json").is_file() and (p / "run.json").is_file())
    if not folders:
        print(f"reference_table.py: no runs under {ROOT} (make them with scripts/reference_cpu.sh)", file=sys.stderr)
        return 2
    print("| run | test mse_frame | test mse_pixel255 | reference (per-pixel) | ratio to reference | "
          "best baseline (mse_frame) | ratio to baseline | config | epochs | hardware | wall |")
    print("|---|---:|---:|---|---:|---|---:|---|---:|---|---:|")
    for f in folders:
        print(_row(f))
    return 0


if __name__ == "__main__":
    sys.exit(main())
