"""`mmtune bench`: training-step throughput, memory, FLOPs, packed trials and data generation.

Every measurement that reports a peak memory runs in its own fresh process (spawned), so the
peak RSS of one model is not the high-water mark of an earlier one. The training step is the
one `Trainer` runs (`forward_loss` + `optimizer_step` from mmtune.training.loop), on real
Moving MNIST batches cut by `Batches`, so the bench measures the code a trial runs.

Example:
    >>> from mmtune.bench import BenchConfig, run_bench
    >>> result = run_bench(BenchConfig(tiny=True))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import gc
import json
import multiprocessing as mp
import os
import queue as _queue
import resource
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmtune._hardware import machine
from mmtune._io import atomic_write_bytes, json_safe
from mmtune.errors import MMTuneError
from mmtune.training.cost import count_train_flops

# Model sizes: "default" is a model's default config, the others are presets of that name (a
# model without the preset skips the size): small, seed2023 and openstl (OpenSTL's Moving-MNIST
# size) are conv_tau's.
SIZES = ("small", "seed2023", "default", "openstl")
# Dense bf16 peak TFLOP/s (no sparsity) of the GPUs a sweep is likely to meet; others: unknown.
BF16_PEAK_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("GH200", 989.0),
    ("H200", 989.0),
    ("H100", 989.0),  # SXM
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
)
# Variants of the training step. "fast" is exactly what a trial runs with TrainConfig.fast=True
# (on CPU: bf16 autocast where the CPU has native bf16, else the same as eager); on CUDA the
# ablations show what each speed-up adds on its own.
VARIANTS: dict[str, dict[str, Any]] = {
    "eager": {"fast": False, "channels_last": False, "compile": False},
    "bf16": {"fast": True, "channels_last": False, "compile": False},
    "bf16_cl": {"fast": True, "channels_last": None, "compile": False},
    "fast": {"fast": True, "channels_last": None, "compile": None},
}
CUDA_VARIANTS = ("eager", "bf16", "bf16_cl", "fast")
CPU_VARIANTS = ("eager", "fast")


@dataclass(frozen=True)
class BenchConfig:
    """What one `mmtune bench` run measures.

    Args:
        device: auto (cuda before cpu) | cpu | cuda.
        sizes: model sizes: default (the default config), or small, seed2023, openstl: the
            preset of that name, where a model has it (seed2023 and openstl: conv_tau).
        models: models to time; empty: all registered ones.
        steps: most timed training steps per measurement.
        warmup: untimed steps first (they include torch.compile's compile time).
        batch_size: batch of every training step.
        pack: numbers K of concurrent trials packed on one device.
        pack_model: model of the packed trials.
        pack_size: its size.
        pack_seconds: how long each packed trial trains after all have started together.
        budget_s: a measurement stops timing after this many seconds (at least 2 steps).
        gen_sequences: Moving MNIST sequences generated on one core.
        gen_repeats: repeats of the generation timing (the minimum and median are reported).
        variants: step variants; empty: eager and fast (plus bf16, bf16_cl on CUDA).
        tiny: a CI-sized run (small size only, few steps, K = 1, 2); overrides the above.
    """

    device: str = "auto"
    sizes: tuple[str, ...] = SIZES
    models: tuple[str, ...] = ()
    steps: int = 20
    warmup: int = 3
    batch_size: int = 16
    pack: tuple[int, ...] = (1, 2, 4, 8)
    pack_model: str = "conv_tau"
    pack_size: str = "small"
    pack_seconds: float = 20.0
    budget_s: float = 30.0
    gen_sequences: int = 10_000
    gen_repeats: int = 3
    variants: tuple[str, ...] = ()
    tiny: bool = False

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "gen_sequences", "gen_repeats"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise MMTuneError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.warmup, int) or self.warmup < 0:
            raise MMTuneError(f"warmup must be an integer >= 0, got {self.warmup!r}")
        unknown = sorted(set(self.sizes) - set(SIZES))
        if unknown or not self.sizes:
            raise MMTuneError(f"sizes must be some of {list(SIZES)}, got {list(self.sizes)}")
        if self.pack_size not in SIZES:
            raise MMTuneError(f"pack_size must be one of {list(SIZES)}, got {self.pack_size!r}")
        if any(not isinstance(k, int) or k < 1 for k in self.pack):
            raise MMTuneError(f"pack must be positive integers, got {list(self.pack)}")
        unknown = sorted(set(self.variants) - set(VARIANTS))
        if unknown:
            raise MMTuneError(f"variants must be some of {list(VARIANTS)}, got {unknown}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise MMTuneError(f"device must be one of ['auto', 'cpu', 'cuda'], got {self.device!r}")
        if self.pack_seconds <= 0 or self.budget_s <= 0:
            raise MMTuneError("pack_seconds and budget_s must be > 0")

    def effective(self) -> BenchConfig:
        """The config actually run: `tiny` replaces the sizes, steps and packing."""
        if not self.tiny:
            return self
        return dataclasses.replace(
            self, sizes=("small",), steps=2, warmup=1, pack=(1, 2), pack_seconds=2.0, budget_s=3.0,
            gen_repeats=1,
        )


def _log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Models and configs.


def size_config(model: str, size: str) -> Any | None:
    """The typed config of `model` at `size`, or None where the size does not apply."""
    from mmtune.models import get_entry, make_model_config

    if size == "default":
        return make_model_config(model)
    return make_model_config(model, preset=size) if size in get_entry(model).presets else None


def _kl_weight(model: str) -> float:
    from mmtune.models import get_entry

    return get_entry(model).kl_weight


def _bench_frames(n: int):
    """n real Moving MNIST training sequences (uint8, (n, 20, 64, 64)), seed 0."""
    from mmtune.data.datasets import STREAMS
    from mmtune.data.digits import load_digits, split_digits
    from mmtune.data.moving_mnist import generate

    return generate(split_digits(load_digits()).trainval, n, seed=0, stream=STREAMS["train"]).frames


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _setup_trial(model: str, cfg: Any, variant: str, device, batch_size: int, n_seqs: int, seed: int = 0):
    """(net, optimizer, loss_fn, batches, fast, batch orders) of one variant, as a Trainer builds them."""
    import torch

    from mmtune.metrics import VideoLoss
    from mmtune.models import get_model
    from mmtune.training.config import TrainConfig
    from mmtune.training.loop import Batches, build_optimizer, fast_path, prepare_model

    v = VARIANTS[variant]
    # "fast" is what a trial runs, so a model whose entry turns the fast path off on CUDA runs eager
    fast = fast_path(model, device, v["fast"]) if variant == "fast" else v["fast"]
    torch.manual_seed(0)
    net = prepare_model(get_model(model, cfg), model, device, fast, v["channels_last"], v["compile"])
    net.train()
    # a default trial's optimizer (AdamW, fused on CUDA with the fast path), at a small lr
    opt = build_optimizer(TrainConfig(lr=1e-4, fast=v["fast"]), net, device)
    batches = Batches(_bench_frames(n_seqs), None, device, on_device=v["fast"])
    orders = _batch_orders(len(batches), batch_size, seed)
    return net, opt, VideoLoss(kl_weight=_kl_weight(model)), batches, fast, orders


def _batch_orders(n: int, batch_size: int, seed: int = 0):
    """An endless stream of random index batches over n sequences."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(n, generator=gen)
        for lo in range(0, n - batch_size + 1, batch_size):
            yield order[lo : lo + batch_size]


def _train_steps(net, opt, loss_fn, batches, fast: bool, device, orders, stop: Callable[[int, float], bool]):
    """Run training steps until stop(steps_done, seconds) is true; returns (steps, seconds)."""
    from mmtune.training.loop import forward_loss, optimizer_step

    _sync(device)
    t0 = time.perf_counter()
    steps = 0
    while not stop(steps, time.perf_counter() - t0):
        x, y = batches.get(next(orders))
        loss = forward_loss(net, loss_fn, x, y, device, fast)
        optimizer_step(net, loss, opt, 1.0)
        steps += 1
    _sync(device)
    return steps, time.perf_counter() - t0


def _set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(max(1, n))


def _rss_mb() -> float:
    """Peak resident set size of this process, MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def measure_model(
    model: str, size: str, variants: list[str], device_name: str, batch_size: int, steps: int,
    warmup: int, budget_s: float, threads: int,
) -> dict[str, Any]:
    """Samples/s, memory and FLOPs of one model and size, for each step variant (one process)."""
    import torch

    from mmtune.training.loop import resolve_device

    _set_threads(threads)
    device = resolve_device(device_name)
    cfg = size_config(model, size)
    if cfg is None:
        raise MMTuneError(f"size {size!r} does not apply to {model!r}")
    rss_start = _rss_mb()
    flops = count_train_flops(model, cfg, kl_weight=_kl_weight(model), batch=1, device=device.type)
    n_params = sum(p.numel() for p in _param_probe(model, cfg))
    n_seqs = max(4 * batch_size, 64)
    rows = []
    if device.type == "cuda":
        # one variant at a time, so each one's CUDA peak memory is its own; GPU timings are steady
        for variant in variants:
            torch.cuda.reset_peak_memory_stats(device)
            trial = _setup_trial(model, cfg, variant, device, batch_size, n_seqs)
            warm_s = _warm(trial, device, warmup, batch_size)
            done, secs = _time(trial, device, steps, budget_s, batch_size)
            rows.append(_row(variant, done, secs, warm_s, warmup, batch_size, flops,
                             torch.cuda.max_memory_allocated(device) / 2**20))
            del trial
            gc.collect()
            torch.cuda.empty_cache()
    else:
        # all variants alive, timed in ABBA order (half the steps each pass): on a shared CPU the
        # load drifts, and a fixed order would hand that drift to whichever variant runs later
        trials = {v: _setup_trial(model, cfg, v, device, batch_size, n_seqs) for v in variants}
        warm = {v: _warm(trials[v], device, warmup, batch_size) for v in variants}
        acc = {v: [0, 0.0] for v in variants}
        for order in (variants, variants[::-1]):
            for v in order:
                done, secs = _time(trials[v], device, max(1, (steps + 1) // 2), budget_s / 2, batch_size, 1)
                acc[v][0] += done
                acc[v][1] += secs
        rows = [_row(v, int(acc[v][0]), acc[v][1], warm[v], warmup, batch_size, flops, None) for v in variants]
    return {
        "model": model, "size": size, "config": dataclasses.asdict(cfg), "params": n_params,
        "flops_per_sample": flops, "batch_size": batch_size, "threads": threads,
        "rss_start_mb": rss_start, "peak_rss_mb": _rss_mb(), "variants": rows,
    }


def _warm(trial: tuple, device, warmup: int, batch_size: int) -> float:
    """Untimed steps (with the compile on CUDA); their seconds."""
    net, opt, loss_fn, batches, fast, orders = trial
    return _train_steps(net, opt, loss_fn, batches, fast, device, orders, lambda k, _t: k >= warmup)[1]


def _time(trial: tuple, device, steps: int, budget_s: float, batch_size: int, min_steps: int = 2):
    """(steps, seconds) of up to `steps` timed steps, cut at `budget_s` once `min_steps` ran."""
    net, opt, loss_fn, batches, fast, orders = trial
    return _train_steps(net, opt, loss_fn, batches, fast, device, orders,
                        lambda k, t: k >= steps or (k >= min_steps and t >= budget_s))


def _row(variant: str, done: int, secs: float, warm_s: float, warmup: int, batch_size: int, flops: float,
         cuda_mb: float | None) -> dict[str, Any]:
    sps = done * batch_size / secs
    return {"variant": variant, "steps": done, "seconds": secs, "samples_per_s": sps,
            "step_ms": 1000 * secs / done, "warmup_steps": warmup, "warmup_s": warm_s,
            "achieved_tflops": flops * sps / 1e12, "cuda_max_allocated_mb": cuda_mb}


def _param_probe(model: str, cfg: Any):
    from mmtune.models import get_model

    return get_model(model, cfg).parameters()


def fast_path_gradients(model: Any, name: str, device: Any, fast: bool, batch: tuple[Any, Any]) -> dict[str, Any]:
    """Parameter gradients (fp32, on the CPU) of one training step's loss on `batch` = (x, y),
    through the loop's own `prepare_model` and `forward_loss` on a copy of `model`: what the fast
    path's numerics are checked with (tests/training/test_fast_path.py, scripts/gpu_lstm_diag.py)."""
    import copy

    from mmtune.metrics import VideoLoss
    from mmtune.models import get_entry
    from mmtune.training import loop

    net = loop.prepare_model(copy.deepcopy(model), name, device, fast, compile=False)
    net.train()
    x, y = (t.to(device) for t in batch)
    loss = loop.forward_loss(net, VideoLoss(get_entry(name).kl_weight), x, y, device, fast)
    loss.backward()
    return {n: p.grad.detach().float().cpu() for n, p in net.named_parameters() if p.grad is not None}


def pack_worker(
    rank: int, model: str, size: str, device_name: str, batch_size: int, warmup: int, seconds: float,
    threads: int, barrier: Any,
) -> dict[str, Any]:
    """One of K packed trials: set up, warm up, wait for all, then train for `seconds`."""
    from mmtune.training.loop import resolve_device

    _set_threads(threads)
    device = resolve_device(device_name)
    trial = _setup_trial(model, size_config(model, size), "fast", device, batch_size, max(4 * batch_size, 64), rank)
    _warm(trial, device, max(warmup, 1), batch_size)
    barrier.wait(timeout=900)
    net, opt, loss_fn, batches, fast, orders = trial
    done, secs = _train_steps(net, opt, loss_fn, batches, fast, device, orders, lambda _k, t: t >= seconds)
    return {"rank": rank, "steps": done, "seconds": secs, "samples": done * batch_size,
            "peak_rss_mb": _rss_mb()}


def generation_worker(n: int, repeats: int) -> dict[str, Any]:
    """Seconds to generate n Moving MNIST sequences pinned to one core, numpy/torch 1 thread."""
    import statistics

    import torch

    from mmtune.data.datasets import STREAMS
    from mmtune.data.digits import load_digits, split_digits
    from mmtune.data.moving_mnist import generate

    core = min(os.sched_getaffinity(0)) if hasattr(os, "sched_setaffinity") else None
    if core is not None:
        os.sched_setaffinity(0, {core})
    torch.set_num_threads(1)
    pool = split_digits(load_digits()).trainval
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        generate(pool, n, seed=0, stream=STREAMS["train"])
        times.append(time.perf_counter() - t0)
    return {"sequences": n, "core": core, "seconds": times, "min_s": min(times),
            "median_s": statistics.median(times), "sequences_per_s": n / min(times)}


# ---------------------------------------------------------------------------------------------
# Fresh processes.


def _child(fn: Callable[..., Any], args: tuple, q: Any) -> None:
    try:
        q.put(("ok", fn(*args)))
    except BaseException:  # the parent reports it; a child must never hang the bench
        q.put(("error", traceback.format_exc()))


_SINGLE_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _run_processes(jobs: list[tuple[Callable[..., Any], tuple]], timeout: float, env: dict | None = None):
    """Run each (fn, args) in its own spawned process, all at once; their results, in order."""
    ctx = mp.get_context("spawn")
    saved = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        queues = [ctx.Queue() for _ in jobs]
        procs = [ctx.Process(target=_child, args=(fn, args, q), daemon=True) for (fn, args), q in zip(jobs, queues, strict=True)]
        for p in procs:
            p.start()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    deadline = time.monotonic() + timeout
    results, error = [], None
    for p, q in zip(procs, queues, strict=True):
        try:
            status, value = q.get(timeout=max(1.0, deadline - time.monotonic()))
        except _queue.Empty:
            status, value = "error", f"no result within {timeout:.0f} s (exit code {p.exitcode})"
        if status == "error" and error is None:
            error = value
        results.append(value)
    for p in procs:
        p.join(timeout=10)
        if p.is_alive():
            p.kill()  # only processes this function started
    if error is not None:
        raise MMTuneError(f"a bench process failed:\n{error.strip()}")
    return results


def _load1() -> float | None:
    """The 1-minute load average (other processes included), None where unknown."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def _ctx_barrier(k: int):
    return mp.get_context("spawn").Barrier(k)


# ---------------------------------------------------------------------------------------------
# The run.


def hardware() -> dict[str, Any]:
    """The machine (`mmtune._hardware.machine`) and its load right now."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {**machine(), "load_avg_at_start": None if load is None else [round(v, 2) for v in load]}


def bf16_peak_tflops(gpu_name: str | None) -> float | None:
    """Dense bf16 peak of a known GPU, None for unknown ones and for CPUs."""
    if not gpu_name:
        return None
    for key, peak in BF16_PEAK_TFLOPS:
        if key.lower() in gpu_name.lower():
            return peak
    return None


@dataclass
class BenchResult:
    """All figures of one run (what the JSON holds)."""

    meta: dict[str, Any]
    models: list[dict[str, Any]] = field(default_factory=list)
    pack: dict[str, Any] = field(default_factory=dict)
    generation: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        return dataclasses.asdict(self)


def _plan(cfg: BenchConfig) -> list[tuple[str, str, list[str]]]:
    """(model, size, labels) to measure; sizes giving the same config are measured once."""
    from mmtune.models import list_models

    models = list(cfg.models) or list_models()
    plan: list[tuple[str, str, list[str]]] = []
    for model in models:
        seen: dict[Any, list[str]] = {}
        for size in cfg.sizes:
            mc = size_config(model, size)
            if mc is None:
                continue
            if mc in seen:
                seen[mc].append(size)
                continue
            seen[mc] = [size]
            plan.append((model, size, seen[mc]))
    return plan


def run_bench(
    cfg: BenchConfig, command: str = "mmtune bench", on_progress: Callable[[BenchResult], object] | None = None
) -> BenchResult:
    """Measure everything `cfg` asks for, with progress lines on stderr.

    Args:
        cfg: what to measure.
        command: the command line, recorded in the result.
        on_progress: called with the result so far (meta["complete"] False) after each
            measurement, so that a bench stopped by a timeout still leaves its figures: on the
            H200 (2026-12-04) the bench ran out of its device time twice, in the packing.

    Returns:
        The figures; write them with `write_json` and `write_markdown`.
    """
    import torch

    from mmtune.models import get_entry
    from mmtune.training.loop import resolve_device

    cfg = cfg.effective()
    for model in cfg.models:
        get_entry(model)
    get_entry(cfg.pack_model)
    if size_config(cfg.pack_model, cfg.pack_size) is None:
        raise MMTuneError(f"size {cfg.pack_size!r} does not apply to {cfg.pack_model!r}")
    device = resolve_device(cfg.device)
    meta = _meta(cfg, device, command)
    hw = meta["hardware"]
    result = BenchResult(meta)

    def progress() -> None:
        if on_progress is not None:
            on_progress(result)

    t_start = time.perf_counter()
    _log(f"device {device.type} ({meta['gpu_name'] or hw['cpu']}), {hw['cores']} cores, torch {torch.__version__}; "
         f"load average {hw['load_avg_at_start']}")

    gen = _run_processes([(generation_worker, (cfg.gen_sequences, cfg.gen_repeats))], timeout=600,
                         env=dict.fromkeys(_SINGLE_THREAD_ENV, "1"))[0]
    result.generation = gen
    progress()
    _log(f"generation: {gen['sequences']} sequences on one core in {gen['min_s']:.2f} s "
         f"(min of {len(gen['seconds'])}; median {gen['median_s']:.2f} s)")
    variants = list(cfg.variants) or list(CUDA_VARIANTS if device.type == "cuda" else CPU_VARIANTS)
    _time_models(cfg, device.type, variants, hw["cores"], result.models, progress)
    result.pack = {"model": cfg.pack_model, "size": cfg.pack_size, "batch_size": cfg.batch_size,
                   "variant": "fast", "runs": []}
    _time_packing(cfg, device.type, hw["cores"], result.pack["runs"], progress)
    meta["complete"] = True
    meta["load_avg_at_end"] = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
    meta["total_seconds"] = time.perf_counter() - t_start
    _log(f"done in {meta['total_seconds']:.0f} s")
    return result


def _meta(cfg: BenchConfig, device: Any, command: str) -> dict[str, Any]:
    """The result's record of when, where and how it was measured."""
    from mmtune.training.loop import autocast_enabled, compile_enabled

    hw = hardware()
    gpu_name = hw["gpu"]["name"] if device.type == "cuda" and hw["gpu"] else None
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command, "complete": False, "device": device.type, "hardware": hw, "config": dataclasses.asdict(cfg),
        "gpu_name": gpu_name, "bf16_peak_tflops": bf16_peak_tflops(gpu_name),
        "fast_path": {
            "autocast_bf16": autocast_enabled(device, True), "channels_last": device.type == "cuda",
            "compile": compile_enabled(device, True), "fused_adamw": device.type == "cuda",
            "data_on_device": device.type == "cuda",
        },
    }


def _time_models(
    cfg: BenchConfig, device: str, variants: list[str], cores: int, rows: list[dict[str, Any]],
    progress: Callable[[], None],
) -> None:
    """Each model and size's training speed under each variant, one process each, into `rows`."""
    for model, size, labels in _plan(cfg):
        _log(f"{model} {'='.join(labels)}: timing {', '.join(variants)} ...")
        row = _run_processes([(measure_model, (model, size, variants, device, cfg.batch_size, cfg.steps,
                                               cfg.warmup, cfg.budget_s, cores))], timeout=3600)[0]
        row["sizes"] = labels
        row["load_avg_1min_after"] = _load1()
        rows.append(row)
        progress()
        for v in row["variants"]:
            _log(f"  {model} {size} {v['variant']:8s} {v['samples_per_s']:9.1f} samples/s  "
                 f"({v['steps']} steps, warm-up {v['warmup_s']:.1f} s)  "
                 f"{v['achieved_tflops'] * 1000:.1f} GFLOP/s  peak RSS {row['peak_rss_mb']:.0f} MiB")


def _time_packing(
    cfg: BenchConfig, device: str, cores: int, runs: list[dict[str, Any]], progress: Callable[[], None]
) -> None:
    """The aggregate speed of K trials side by side, for each K of `cfg.pack`, each with cores // K
    threads, into `runs`."""
    for k in cfg.pack:
        threads = max(1, cores // k)
        _log(f"packing {k} concurrent {cfg.pack_model} {cfg.pack_size} trials "
             f"({threads} thread(s) each, {cfg.pack_seconds:.0f} s) ...")
        barrier = _ctx_barrier(k)
        jobs = [(pack_worker, (r, cfg.pack_model, cfg.pack_size, device, cfg.batch_size, cfg.warmup,
                               cfg.pack_seconds, threads, barrier)) for r in range(k)]
        workers = _run_processes(jobs, timeout=900 + 2 * cfg.pack_seconds)
        wall = max(w["seconds"] for w in workers)
        agg = sum(w["samples"] for w in workers) / wall
        runs.append({"k": k, "threads_per_trial": threads, "aggregate_samples_per_s": agg,
                     "load_avg_1min_after": _load1(),
                     "per_trial_samples_per_s": [w["samples"] / w["seconds"] for w in workers],
                     "seconds": wall, "workers": workers})
        base = next((r["aggregate_samples_per_s"] for r in runs if r["k"] == 1), None)
        for r in runs:
            r["speedup_vs_1"] = None if not base else r["aggregate_samples_per_s"] / base
        progress()
        _log(f"  K={k}: {agg:.1f} samples/s aggregate")


# ---------------------------------------------------------------------------------------------
# Writing.


def write_json(result: BenchResult, path: str | Path) -> Path:
    """Write the figures as JSON (atomically; NaN/inf as null), keys in the result's order."""
    return atomic_write_bytes((json.dumps(json_safe(result.to_dict()), indent=2) + "\n").encode(), path)


def _begin(kind: str) -> str:
    return f"<!-- mmtune-bench:{kind}:begin -->"


def _end(kind: str) -> str:
    return f"<!-- mmtune-bench:{kind}:end -->"


def write_markdown(result: BenchResult, path: str | Path) -> Path:
    """Write the tables into `path` between this device's markers, keeping everything else.

    A CPU run and a GPU run fill their own sections, so the hand-written text of the file and
    the other device's figures survive a re-run. A new file gets a title and the section.
    """
    path = Path(path)
    kind = result.meta["device"]
    section = f"{_begin(kind)}\n{render_markdown(result)}\n{_end(kind)}"
    text = path.read_text() if path.exists() else "# Benchmarks\n\nWritten by `mmtune bench`.\n"
    if _begin(kind) in text and _end(kind) in text:
        head, rest = text.split(_begin(kind), 1)
        tail = rest.split(_end(kind), 1)[1]
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    return atomic_write_bytes(text.encode(), path)


def _f(x: float | None, fmt: str = ".1f") -> str:
    return "–" if x is None else format(x, fmt)


def render_markdown(result: BenchResult) -> str:
    """The tables of one run as Markdown (hardware line, versions, command, date first)."""
    m, hw = result.meta, result.meta["hardware"]
    gpu = hw["gpu"]
    gpu_text = f"{gpu['name']} ×{gpu['count']} ({gpu['memory_gb']} GB)" if gpu else "no GPU"
    v = hw["versions"]
    lines = [
        f"### Run on {m['device'].upper()}: {m['date']}",
        "",
        f"**Hardware:** CPU {hw['cpu']}, {hw['cores']} cores, {hw['memory_gb']} GB RAM; GPU: {gpu_text}. "
        f"Load average at start {hw['load_avg_at_start']}, at end {m.get('load_avg_at_end')}.",
        "",
        f"**Versions:** python {v['python']}, torch {v['torch']}, numpy {v['numpy']} "
        f"(torch built for CUDA {v['cuda']}; cuDNN {v['cudnn'] or 'not loaded: no GPU'}).",
        "",
        f"**Command:** `{m['command']}` ({m['total_seconds']:.0f} s)",
        "",
        f"**Fast path on this device:** {', '.join(k for k, on in m['fast_path'].items() if on) or 'none (eager fp32)'}.",
        "",
        "#### Moving MNIST generation, one core",
        "",
        "| sequences | seconds (min) | seconds (median) | repeats | sequences/s |",
        "|---:|---:|---:|---:|---:|",
    ]
    g = result.generation
    lines.append(f"| {g['sequences']:,} | {g['min_s']:.2f} | {g['median_s']:.2f} | {len(g['seconds'])} | "
                 f"{g['sequences_per_s']:,.0f} |")
    return "\n".join(lines + _step_table(result) + _pack_table(result))


def _step_table(result: BenchResult) -> list[str]:
    """The training-step table: one line per model, size and variant."""
    m, cuda = result.meta, result.meta["device"] == "cuda"
    peak = m["bf16_peak_tflops"]
    lines = [
        "",
        f"#### Training step, batch {result.models[0]['batch_size'] if result.models else '–'}",
        "",
        "Samples/s of one training step (forward, loss, backward, grad clip, AdamW), steady state "
        "after the warm-up. FLOPs: matmuls and convolutions of forward + backward per sample "
        "(FlopCounterMode). Peak RSS: of the process that timed all of that row's variants; "
        "CUDA memory: torch.cuda.max_memory_allocated per variant. Load avg: the machine's 1-minute "
        "load average (this bench and any other process) when the row finished.",
        "",
        "| model | size | params | GFLOP/sample | variant | samples/s | × eager | step ms | warm-up s | "
        + ("achieved TFLOP/s | % of bf16 peak | CUDA max alloc MiB | " if cuda else "achieved GFLOP/s | ")
        + "peak RSS MiB | load avg |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|" + ("---:|---:|---:|" if cuda else "---:|") + "---:|---:|",
    ]
    for row in result.models:
        eager = next((x["samples_per_s"] for x in row["variants"] if x["variant"] == "eager"), None)
        for x in row["variants"]:
            rel = x["samples_per_s"] / eager if eager else None
            cells = [row["model"], "=".join(row["sizes"]), f"{row['params'] / 1e6:.2f} M",
                     f"{row['flops_per_sample'] / 1e9:.2f}", x["variant"], f"{x['samples_per_s']:.1f}",
                     _f(rel, ".2f"), f"{x['step_ms']:.0f}", f"{x['warmup_s']:.1f}"]
            if cuda:
                cells += [f"{x['achieved_tflops']:.2f}",
                          _f(None if peak is None else 100 * x["achieved_tflops"] / peak, ".1f"),
                          _f(x["cuda_max_allocated_mb"], ".0f")]
            else:
                cells.append(f"{x['achieved_tflops'] * 1000:.1f}")
            cells += [f"{row['peak_rss_mb']:.0f}", _f(row.get("load_avg_1min_after"), ".1f")]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def _pack_table(result: BenchResult) -> list[str]:
    """The packed-trials table (none when the run packed none)."""
    p, device = result.pack, result.meta["device"]
    if not p:
        return []
    lines = [
        "",
        f"#### Packed trials: K concurrent {p['model']} {p['size']} trials on one "
        f"{'GPU' if device == 'cuda' else 'CPU'} (fast path, batch {p['batch_size']})",
        "",
        "Each trial is its own process; all start timing together (a barrier) and train for the "
        "same time. Aggregate = all trials' samples / the longest trial's time.",
        "",
        "| K | threads/trial | aggregate samples/s | × one trial | per-trial samples/s | load avg |",
        "|---:|---:|---:|---:|---|---:|",
    ]
    for r in p["runs"]:
        per = ", ".join(f"{s:.1f}" for s in r["per_trial_samples_per_s"])
        lines.append(f"| {r['k']} | {r['threads_per_trial']} | {r['aggregate_samples_per_s']:.1f} | "
                     f"{_f(r['speedup_vs_1'], '.2f')} | {per} | {_f(r.get('load_avg_1min_after'), '.1f')} |")
    return lines

