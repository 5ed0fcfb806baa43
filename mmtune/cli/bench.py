"""`mmtune bench`: measure the training step, packed trials and data generation; write the tables."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from mmtune.errors import MMTuneError

EPILOG = """examples:
  mmtune bench --tiny --out /tmp/bench.md          # CI-sized, under a minute on 2 CPU cores
  mmtune bench --device cpu                        # the CPU figures of docs/benchmarks.md
  mmtune bench --device cuda --steps 50 --warmup 10 --pack 1,2,4,8   # on an H100/H200
"""


def _csv(kind: type = str):
    def parse(text: str) -> tuple:
        try:
            return tuple(kind(t.strip()) for t in text.split(",") if t.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}") from None

    return parse


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `mmtune bench`."""
    p = sub.add_parser(
        "bench", help="benchmark the training step (eager vs fast), packed trials and data generation",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--device", default="auto", help="auto (cuda before cpu) | cpu | cuda (default auto)")
    p.add_argument("--sizes", type=_csv(), default=("small", "seed2023", "default", "openstl"),
                   help="model sizes: default (the default config), or small, seed2023, openstl: the preset of "
                        "that name where a model has it (default all four)")
    p.add_argument("--models", type=_csv(), default=(), help="models to time (default all registered)")
    p.add_argument("--steps", type=int, default=20, help="most timed steps per measurement (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first, incl. compile (default 3)")
    p.add_argument("--batch-size", type=int, default=16, help="batch size (default 16)")
    p.add_argument("--pack", type=_csv(int), default=(1, 2, 4, 8),
                   help="numbers of concurrent trials packed on one device (default 1,2,4,8)")
    p.add_argument("--pack-model", default="conv_tau", help="model of the packed trials (default conv_tau)")
    p.add_argument("--pack-size", default="small", help="its size (default small)")
    p.add_argument("--pack-seconds", type=float, default=20.0,
                   help="seconds each packed trial trains after all have started (default 20)")
    p.add_argument("--budget-s", type=float, default=30.0,
                   help="stop timing a measurement after this many seconds, >= 2 steps (default 30)")
    p.add_argument("--variants", type=_csv(), default=(),
                   help="step variants: eager, bf16, bf16_cl, fast (default eager,fast; all four on CUDA)")
    p.add_argument("--out", default="docs/benchmarks.md",
                   help="Markdown file; this device's section is replaced, the rest kept (default docs/benchmarks.md)")
    p.add_argument("--json", default=None,
                   help="JSON file (default: next to --out, named STEM-DEVICE.json)")
    p.add_argument("--tiny", action="store_true",
                   help="CI-sized: small size only, 2 steps, K = 1,2, 2 s packs (< 60 s on an idle 2-core CPU)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the bench and write its JSON and Markdown."""
    from mmtune.bench.bench import BenchConfig, run_bench, write_json, write_markdown

    if not args.pack:
        raise MMTuneError("--pack needs at least one number")
    cfg = BenchConfig(
        device=args.device, sizes=args.sizes, models=args.models, steps=args.steps, warmup=args.warmup,
        batch_size=args.batch_size, pack=args.pack, pack_model=args.pack_model, pack_size=args.pack_size,
        pack_seconds=args.pack_seconds, budget_s=args.budget_s, variants=args.variants, tiny=args.tiny,
    )
    from mmtune.training.loop import resolve_device

    command = "mmtune " + shlex.join(getattr(args, "argv", None) or sys.argv[1:])
    out = Path(args.out)
    device = resolve_device(args.device).type
    json_path = Path(args.json) if args.json else out.with_name(f"{out.stem}-{device}.json")
    # The figures so far, after each measurement, beside (not over) the finished file: a bench cut
    # short by a timeout keeps them, and an earlier complete result is never overwritten by a part.
    partial = json_path.with_name(f"{json_path.stem}.partial.json")
    result = run_bench(cfg, command=command, on_progress=lambda r: write_json(r, partial))
    write_json(result, json_path)
    write_markdown(result, out)
    partial.unlink(missing_ok=True)
    print(f"wrote {out} and {json_path}")
    return 0
