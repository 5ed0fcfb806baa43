"""What fp32 can still gain on a CPU without bf16 (issue 24): channels_last, oneDNN off/on, threads per
trial, and two 1-thread trials side by side; every layout change checked against eager fp32's gradients.

    .venv/bin/python scripts/fp32_cpu.py            # about 4 minutes on 2 cores; prints a Markdown table
    .venv/bin/python scripts/fp32_cpu.py --json docs/fp32-cpu.json

The model is the default space's default config (conv_tau small, hid_S 16, N_S 4, hid_T 64, N_T 3),
batch 16, the training step of mmtune's loop (forward, the TAU loss, backward, AdamW), fp32 eager.
A variant is kept only where its gradients agree with eager NCHW fp32 (max relative error per
parameter under 1e-3).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _setup(threads: int, channels_last: bool = False, mkldnn: bool = True):
    import torch

    from mmtune.search.spaces import load_space
    from mmtune.training.loop import Trainer

    torch.set_num_threads(threads)
    torch.backends.mkldnn.enabled = mkldnn
    space = load_space(ROOT / "search_spaces" / "default.yaml")
    trial = space.trial_config(space.default_params(), {"device": "cpu", "fast": False, "seed": 0})
    trainer = Trainer(trial, progress=False)
    if channels_last:
        trainer.model = trainer.model.to(memory_format=torch.channels_last)
    x, y = trainer.split("val").get(torch.arange(16))
    return torch, trainer, x, y


def _grads(channels_last: bool, mkldnn: bool) -> dict:
    torch, tr, x, y = _setup(1, channels_last, mkldnn)
    torch.manual_seed(0)
    tr.model.train()
    loss, _ = tr.loss_fn(tr.model(x), y)
    loss.backward()
    return {n: p.grad.detach().clone() for n, p in tr.model.named_parameters() if p.grad is not None}


def grad_error(channels_last: bool, mkldnn: bool) -> float:
    """Max over parameters of |g - g_ref| / |g_ref| (norms) against eager NCHW fp32 with oneDNN."""
    ref, got = _grads(False, True), _grads(channels_last, mkldnn)
    return max(float((got[k] - ref[k]).norm() / ref[k].norm().clamp_min(1e-12)) for k in ref)


def speed(threads: int, channels_last: bool = False, mkldnn: bool = True, seconds: float = 25.0) -> float:
    """Training samples per second (batch 16) after 2 warm-up steps, over about `seconds`."""
    torch, tr, x, y = _setup(threads, channels_last, mkldnn)
    from mmtune.training.loop import forward_loss, optimizer_step

    tr.model.train()
    for _ in range(2):
        optimizer_step(tr.model, forward_loss(tr.model, tr.loss_fn, x, y, tr.device, False), tr.optimizer, 1.0)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        optimizer_step(tr.model, forward_loss(tr.model, tr.loss_fn, x, y, tr.device, False), tr.optimizer, 1.0)
        n += len(x)
    return n / (time.perf_counter() - t0)


def _one(q) -> None:
    q.put(speed(1))


def pair() -> float:
    """Two 1-thread trials side by side (processes): their samples per second together."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_one, args=(q,)) for _ in range(2)]
    for p in procs:
        p.start()
    out = [q.get() for _ in procs]
    for p in procs:
        p.join()
    return sum(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="also write the figures to this JSON file (default: none)")
    args = ap.parse_args(argv)
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), "?")
    bf16 = "avx512_bf16" in Path("/proc/cpuinfo").read_text().split()
    rows = []
    for name, threads, cl, dnn in [("eager NCHW, oneDNN on (mmtune's CPU path)", 1, False, True),
                                   ("eager NCHW, oneDNN on (mmtune's CPU path)", 2, False, True),
                                   ("channels_last", 1, True, True), ("channels_last", 2, True, True),
                                   ("oneDNN off", 1, False, False), ("oneDNN off", 2, False, False)]:
        err = 0.0 if not cl and dnn else grad_error(cl, dnn)
        sps = speed(threads, cl, dnn)
        rows.append({"variant": name, "threads": threads, "samples_per_s": sps, "grad_rel_err": err})
        print(f"{name}, {threads} thread(s): {sps:.2f} samples/s, gradient rel. error {err:.1e}", flush=True)
    rows.append({"variant": "two 1-thread trials side by side (together)", "threads": 2,
                 "samples_per_s": pair(), "grad_rel_err": 0.0})
    print(f"two 1-thread trials together: {rows[-1]['samples_per_s']:.2f} samples/s", flush=True)
    print(f"\n{cpu}, {'with' if bf16 else 'without'} AVX512-BF16; conv_tau (the default space's default config), "
          f"batch 16, fp32 eager\n")
    print("| variant | threads | training samples/s | vs NCHW same threads | gradient rel. error vs NCHW |")
    print("|---|---:|---:|---:|---:|")
    base = {r["threads"]: r["samples_per_s"] for r in rows[:2]}
    for r in rows:
        print(f"| {r['variant']} | {r['threads']} | {r['samples_per_s']:.2f} | "
              f"{r['samples_per_s'] / base[r['threads']]:.2f}x | {r['grad_rel_err']:.1e} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu, "avx512_bf16": bf16, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
