#!/usr/bin/env python
"""conv_tau beside OpenSTL's TAU at one small, fixed budget (issue 11): the figures can be rerun.

The budget: 2,000 generated training clips x 2 epochs, TAU at the seed2023 size (hid_S 32,
hid_T 128, N_S 4, N_T 8, encoder kernel 3, decoder kernel 5), AdamW lr 1e-3 with OneCycle,
MSE + 0.1 KL, batch 16, the fast path (bf16 autocast where the CPU has it), 256 val clips, seed 0.
OpenSTL's own TAU reached val mse_frame 129.3 then 122.8 (SSIM 0.396, 0.368) at this budget on
this machine (shared/NOTES-measured.md). Each epoch's val metrics and the trivial baselines on
the same val clips go to OUT/parity.json.

    python scripts/tau_parity.py                       # output=linear (the default)
    python scripts/tau_parity.py --set output=sigmoid  # the former output layer
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from mmtune._io import write_json
from mmtune.cli._common import kv as _kv
from mmtune.metrics.baselines import evaluate_baselines, train_mean_intensity
from mmtune.training.config import build_trial
from mmtune.training.loop import Trainer, autocast_enabled

OPENSTL = {"val_mse_frame": [129.3, 122.8], "val_ssim": [0.396, 0.368]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set", dest="model_set", type=_kv, action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--train-size", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="reports/tau-parity")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model = {"hid_S": 32, "hid_T": 128, "N_S": 4, "N_T": 8, "enc_kernel": 3, "dec_kernel": 5, **dict(a.model_set)}
    train = {"epochs": a.epochs, "batch_size": 16, "lr": 1e-3, "weight_decay": 0.0, "kl_weight": 0.1,
             "scheduler": "onecycle", "optimizer": "adamw", "device": "cpu", "fast": True, "seed": 0}
    data = {"train_size": a.train_size, "val_size": 256, "test_size": 16}
    trial = build_trial("conv_tau", None, model, train, data)
    trainer = Trainer(trial, progress=False)
    base = evaluate_baselines(trainer.data.frames("val"), train_mean_intensity(trainer.data.frames("train")))
    t0 = time.perf_counter()
    epochs = []

    def on_epoch(r, tr) -> None:
        epochs.append({"epoch": r.epoch, "val_mse_frame": r.val["mse_frame"], "val_ssim": r.val["ssim"],
                       "val_mse_pixel255": r.val["mse_pixel255"], "seconds": r.seconds})
        print(f"epoch {r.epoch}: val mse_frame {r.val['mse_frame']:.1f} (per-frame), ssim {r.val['ssim']:.3f} "
              f"[OpenSTL TAU {OPENSTL['val_mse_frame'][r.epoch - 1] if r.epoch <= 2 else '-'} / "
              f"{OPENSTL['val_ssim'][r.epoch - 1] if r.epoch <= 2 else '-'}]  ({r.seconds:.0f}s)", flush=True)

    fit = trainer.fit(on_epoch)
    out = {
        "command": "python scripts/tau_parity.py " + " ".join(sys.argv[1:]),
        "config": trial.to_dict(),
        "bf16_autocast": autocast_enabled(trainer.device, True),
        "threads": a.threads,
        "status": fit.status,
        "epochs": epochs,
        "wall_seconds": time.perf_counter() - t0,
        "openstl_tau": OPENSTL,
        "val_baselines": {k: {"mse_frame": v["mse_frame"], "ssim": v["ssim"]} for k, v in base.items()},
        "units": "mse_frame: per-frame MSE, sum over 64x64 pixels in [0,1], mean over frames (OpenSTL)",
    }
    tag = "-".join(f"{k}={v}" for k, v in a.model_set) or "default"
    path = write_json(out, Path(a.out) / f"parity-{tag}.json")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
