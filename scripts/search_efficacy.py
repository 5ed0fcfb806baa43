"""Does the default sweep earn its compute? It, random search with FIFO, and one run of the space's default
config without search, each on the same wall-clock budget, on this machine, alternated, for each seed.

    .venv/bin/python scripts/search_efficacy.py run --budget 10m --seeds 0,1   # 6 runs of 10 minutes
    .venv/bin/python scripts/search_efficacy.py doc                           # docs/search-efficacy.md

`run` writes one small JSON per run into reports/search-efficacy/ (test MSE, FLOPs, wall time, the
anytime curve) as each run ends, so a session that stops keeps what finished; the experiment folders
(checkpoints included) go to --storage. `doc` reads those JSONs and writes the table and the anytime
plots (through the report's anytime panel and headless Chromium, when it is there).

Arms (every one runs `run_search.py` on the default space, whose sweep.time_budget is overridden by --budget):
  default  the default sweep: TPE + ASHA on the first 40 % of the budget, then the final phase
  random   random search with FIFO, every trial to its end, no final phase (--final-share 0)
  none     --no-search: the space's default config from scratch for the whole budget
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "reports" / "search-efficacy"
DOC = ROOT / "docs" / "search-efficacy.md"
ARMS = {
    "default": [],
    "random": ["--sampler", "random", "--scheduler", "fifo", "--final-share", "0"],
    "none": ["--no-search"],
}
LABELS = {"default": "default sweep (TPE + ASHA, then the final phase)", "random": "random search, FIFO",
          "none": "no search (the space's default config)"}


def _cpu() -> str:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "?")
    return f"{model}, {'with' if 'avx512_bf16' in text.split() else 'without'} AVX512-BF16"


def summarize(exp_dir: Path, arm: str, seed: int, wall_s: float, budget: str) -> dict:
    """The run's test MSE (its best model by val MSE), FLOPs, time and anytime curve, from its files."""
    sys.path.insert(0, str(ROOT))
    from mmtune.experiment import read_results, read_sweep

    meta = read_sweep(exp_dir)
    df = read_results(exp_dir).sort_values("timestamp", kind="stable")
    best = json.loads((exp_dir / "best_configs.json").read_text())
    tests = json.loads((exp_dir / "test_metrics.json").read_text())
    model = min(best, key=lambda m: best[m]["val_mse"])
    test = tests[model]["test"]
    start = time.mktime(time.strptime(meta.runs[0].started, "%Y-%m-%dT%H:%M:%S%z"))
    flops = (df["flops_per_sample"].astype(float) * df["train_samples"].astype(float)).fillna(0.0)
    curve, best_so_far = [], math.inf
    for t, v, f in zip(df["timestamp"], df["val_mse"], flops.cumsum(), strict=True):
        if v == v:  # not NaN
            best_so_far = min(best_so_far, float(v))
        curve.append([float(t) - start, best_so_far, float(f)])
    return {
        "arm": arm, "seed": seed, "budget": budget, "experiment": str(exp_dir), "wall_s": wall_s, "cpu": _cpu(),
        "model": model, "trial": best[model]["trial_id"], "val_mse": best[model]["val_mse"],
        "test_mse_frame": test["mse_frame"], "test_mse_pixel255": test["mse_pixel255"], "test_ssim": test.get("ssim"),
        "flops": float(flops.sum()), "trials": meta.num_trials, "training_share": meta.training_share,
        "median_trial_overhead_s": meta.median_trial_overhead_s, "final": meta.final, "curve": curve,
    }


def run(args: argparse.Namespace) -> int:
    seeds = [int(s) for s in args.seeds.split(",")]
    arms = args.arms.split(",")
    OUT.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(seeds):
        order = arms if i % 2 == 0 else arms[::-1]  # alternated: no arm always runs first on a warm machine
        for arm in order:
            name = f"effic-{arm}-s{seed}-{time.strftime('%Y%m%d-%H%M%S')}"
            cmd = [sys.executable, str(ROOT / "run_search.py"), "--time-budget", args.budget, "--seed", str(seed),
                   "--storage", args.storage, "--name", name, "--verbose", "0", *ARMS[arm]]
            print(f"[{time.strftime('%H:%M:%S')}] {arm} seed {seed}: {' '.join(cmd[1:])}", flush=True)
            t0 = time.time()
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            wall = time.time() - t0
            (Path(args.storage) / f"{name}.log").write_text(proc.stdout + proc.stderr)
            if proc.returncode != 0:
                print(f"  failed (exit {proc.returncode}); see {args.storage}/{name}.log", flush=True)
                continue
            s = summarize(Path(args.storage) / name, arm, seed, wall, args.budget)
            (OUT / f"{arm}-s{seed}.json").write_text(json.dumps(s, indent=1) + "\n")
            print(f"  {wall:.0f}s: {s['model']} test mse_frame {s['test_mse_frame']:.2f} "
                  f"({s['test_mse_pixel255']:.1f} per-pixel 0-255), {s['flops']:.3g} FLOPs", flush=True)
    return 0


def doc(args: argparse.Namespace) -> int:
    runs = [json.loads(p.read_text()) for p in sorted(OUT.glob("*-s*.json"))]
    if not runs:
        print(f"search_efficacy.py: no runs in {OUT}; run `search_efficacy.py run` first", file=sys.stderr)
        return 2
    lines = ["| seed | arm | best model | test mse_frame (per-frame) | test mse_pixel255 (per-pixel 0-255) | "
             "ratio to no search | training FLOPs | wall s | trials | share of time training |",
             "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    by = {(r["seed"], r["arm"]): r for r in runs}
    for r in sorted(runs, key=lambda r: (r["seed"], list(ARMS).index(r["arm"]))):
        base = by.get((r["seed"], "none"))
        ratio = f"{r['test_mse_frame'] / base['test_mse_frame']:.3f}" if base else "-"
        share = f"{r['training_share']:.0%}" if r.get("training_share") is not None else "-"
        lines.append(f"| {r['seed']} | {LABELS[r['arm']]} | {r['model']} | {r['test_mse_frame']:.2f} | "
                     f"{r['test_mse_pixel255']:.1f} | {ratio} | {r['flops']:.3g} | {r['wall_s']:.0f} | "
                     f"{r['trials']} | {share} |")
    print("\n".join(lines))
    seeds = sorted({r["seed"] for r in runs})
    for seed in seeds:
        _plot(seed, [by[(seed, a)] for a in ARMS if (seed, a) in by])
    means = {a: [r["test_mse_frame"] for r in runs if r["arm"] == a] for a in ARMS}
    summary = [f"- {LABELS[a]}: mean test mse_frame {sum(v) / len(v):.2f} over {len(v)} seed(s)"
               for a, v in means.items() if v]
    cpus = sorted({r["cpu"] for r in runs})
    text = DOC_HEAD.format(budget=runs[0]["budget"], cpu="; ".join(cpus), seeds=", ".join(map(str, seeds)))
    text += "\n".join(lines) + "\n\n" + "\n".join(summary) + "\n\n"
    text += "".join(f"![anytime, seed {s}](search-efficacy-s{s}.png)\n\n" for s in seeds
                    if DOC.with_name(f"search-efficacy-s{s}.png").is_file())
    notes = DOC.with_name("search-efficacy-notes.md")
    if notes.is_file():
        text += notes.read_text()
    DOC.write_text(text)
    print(f"wrote {DOC}", file=sys.stderr)
    return 0


DOC_HEAD = """# Does the search pay for its compute?

Written by `.venv/bin/python scripts/search_efficacy.py doc` from the runs of
`.venv/bin/python scripts/search_efficacy.py run --budget {budget} --seeds {seeds}` (one JSON per run in
`reports/search-efficacy/`), on {cpu}, 2 cores. Every run is `run_search.py` on the default space
with the same wall-clock budget ({budget} for everything: the search or training, the test split, the
report), alternated between arms; each arm's best model (by val MSE) is tested on the same 500 test
clips of held-out digits. MSE: `mse_frame` is the per-frame MSE (OpenSTL: the sum over 64x64 pixels
in [0, 1], averaged over frames); `mse_pixel255` the per-pixel MSE on the 0-255 scale
(= mse_frame x 65025 / 4096). FLOPs: every training step each run took, summed from
`results.parquet` (`flops_per_sample` x `train_samples` of every row, the final phase's included).

"""


def _plot(seed: int, runs: list[dict]) -> None:
    """docs/search-efficacy-s<seed>.png: the report's anytime panel of the seed's runs, side by side, when
    their experiment folders are still there and Chromium is."""
    exps = [Path(r["experiment"]) for r in runs]
    if not all((e / "sweep.json").is_file() for e in exps):
        print(f"seed {seed}: experiment folders gone; plot not redrawn", file=sys.stderr)
        return
    out = exps[0] / "report-efficacy"
    out.mkdir(exist_ok=True)
    beside = [a for e in exps[1:] for a in ("--beside", str(e))]
    subprocess.run([sys.executable, "-m", "mmtune.cli", "report", str(exps[0]), *beside, "--out", str(out / "report.html")],
                   cwd=ROOT, check=True)
    png = DOC.with_name(f"search-efficacy-s{seed}.png")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "report_shot.py"), str(out / "report.html"),
                    "Anytime", str(png)], cwd=ROOT, check=True)
    print(f"seed {seed}: {png}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the arms")
    r.add_argument("--budget", default="10m", help="wall-clock budget of every run (default 10m)")
    r.add_argument("--seeds", default="0,1", help="comma-separated seeds (default 0,1)")
    r.add_argument("--arms", default="default,random,none", help="arms to run, in order (default all three)")
    r.add_argument("--storage", default="/tmp/mmtune-efficacy", help="where the experiments go (default /tmp/...)")
    r.set_defaults(func=run)
    d = sub.add_parser("doc", help="print the table of the finished runs")
    d.set_defaults(func=doc)
    args = p.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
