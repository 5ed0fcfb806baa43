"""Which evaluation batch validates fastest on this CPU: the seconds of one validation (128 clips) of
each model of the default space, at its default config, per batch size and thread count.

    .venv/bin/python scripts/eval_batch.py            # about 2 minutes on 2 cores; a Markdown table

It measures what `TrainConfig.eval_batch_size` None picks on a CPU (`EVAL_BATCH["cpu"]`): on a
2-core AMD EPYC without AVX512-BF16, conv_tau small validates 128 clips in 3.3 s at batch 8 and in
8.4 s at batch 64 on one thread (the activations of a large batch fall out of the cache).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# Each model at the middle of the default space's ranges (conv_tau: the space's own default config).
MIDDLE = {"conv_tau": {}, "conv_lstm": {"model": "conv_lstm", "conv_lstm.lr": 2.2e-3, "conv_lstm.kernel_size": 5},
          "simple_lstm": {"model": "simple_lstm", "simple_lstm.lr": 1.2e-3, "simple_lstm.hidden": 64}}


def _seconds(model: str, threads: int, sizes: list[int]) -> list[float]:
    import torch

    from mmtune.search.spaces import load_space
    from mmtune.training.loop import Trainer, evaluate

    torch.set_num_threads(threads)
    space = load_space(ROOT / "search_spaces" / "default.yaml")
    params = {**space.default_params(), **MIDDLE[model]}
    trainer = Trainer(space.trial_config(params, {"device": "cpu", "seed": 0}), progress=False)
    val = trainer.val_batches()
    evaluate(trainer.model, val, sizes[0], trainer.trial.train.fast)  # warm-up: oneDNN builds its kernels
    out = []
    for size in sizes:
        t0 = time.perf_counter()
        evaluate(trainer.model, val, size, trainer.trial.train.fast)
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="4,8,16,32,64", help="evaluation batch sizes (default 4,8,16,32,64)")
    ap.add_argument("--threads", default="1,2", help="torch threads (default 1,2)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print("| model | threads | " + " | ".join(f"batch {s}" for s in sizes) + " |")
    print("|---|---|" + "---|" * len(sizes))
    for model in ("conv_tau", "conv_lstm", "simple_lstm"):
        for threads in (int(t) for t in args.threads.split(",")):
            secs = _seconds(model, threads, sizes)
            print(f"| {model} | {threads} | " + " | ".join(f"{s:.2f} s" for s in secs) + " |", flush=True)


if __name__ == "__main__":
    main()
