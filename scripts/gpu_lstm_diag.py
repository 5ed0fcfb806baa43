"""Why simple_lstm's fast-path gradients miss fp32's on CUDA (issue 12's GPU run, 2026-12-04).

tests/training/test_fast_path.py failed there for simple_lstm only (conv_lstm and conv_tau passed):
relative errors of 0.12-0.28 against the 0.05 tolerance. This prints every parameter's relative
gradient error for several paths, on three seeds, so one device run can tell bf16 noise of the
recurrence from a wrong kernel:

  fast         the loop's fast path (bf16 autocast, cuDNN LSTM in bf16) against fp32 on CUDA
  fast_vs_cpu  the same fast gradients against fp32 on the CPU
  fp32_vs_cpu  fp32 on CUDA against fp32 on the CPU (TF32 in cuDNN would show here)
  lstm_fp32    the fast path with the nn.LSTM itself run in fp32 (autocast off inside it)
  no_cudnn     the fast path with cuDNN off (the native LSTM cell in bf16)

  python scripts/gpu_lstm_diag.py [--seeds 0,1,2] [--device cuda]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator

import torch
from torch import nn

from mmtune.bench.bench import fast_path_gradients
from mmtune.models import get_model, make_model_config
from mmtune.training import loop

NAME = "simple_lstm"


def grads(model: nn.Module, device: torch.device, fast: bool, batch) -> dict[str, torch.Tensor]:
    return fast_path_gradients(model, NAME, device, fast, batch)


@contextlib.contextmanager
def lstm_in_fp32() -> Iterator[None]:
    orig = nn.LSTM.forward

    def forward(self, input, hx=None):  # type: ignore[no-untyped-def]
        with torch.autocast("cuda", enabled=False), torch.autocast("cpu", enabled=False):
            hx = None if hx is None else tuple(h.float() for h in hx)
            return orig(self, input.float(), hx)

    nn.LSTM.forward = forward  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.LSTM.forward = orig  # type: ignore[method-assign]


def rel(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, float]:
    return {n: (a[n] - g).norm().item() / max(g.norm().item(), 1e-30) for n, g in b.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    dev = torch.device(args.device)
    cpu = torch.device("cpu")
    print(f"torch {torch.__version__}; cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}, "
          f"matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32}, autocast={loop.autocast_enabled(dev, True)}")
    for seed in (int(s) for s in args.seeds.split(",")):
        torch.manual_seed(seed)
        model = get_model(NAME, make_model_config(NAME, preset="small"))
        gen = torch.Generator().manual_seed(seed + 1)
        clip = torch.rand(4, 20, 1, 64, 64, generator=gen)
        batch = (clip[:, :10], clip[:, 10:])
        ref = grads(model, dev, False, batch)
        ref_cpu = grads(model, cpu, False, batch)
        fast = grads(model, dev, True, batch)
        with lstm_in_fp32():
            lstm32 = grads(model, dev, True, batch)
        with torch.backends.cudnn.flags(enabled=False):
            nocudnn = grads(model, dev, True, batch)
        rows = {"fast": rel(fast, ref), "fast_vs_cpu": rel(fast, ref_cpu), "fp32_vs_cpu": rel(ref, ref_cpu),
                "lstm_fp32": rel(lstm32, ref), "no_cudnn": rel(nocudnn, ref)}
        print(f"seed {seed}: relative gradient error per parameter (tolerance 0.05)")
        print(f"  {'parameter':28s}" + "".join(f"{k:>12s}" for k in rows))
        for n in ref:
            print(f"  {n:28s}" + "".join(f"{rows[k][n]:12.4f}" for k in rows))
        print("  max" + " " * 25 + "".join(f"{max(r.values()):12.4f}" for r in rows.values()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
