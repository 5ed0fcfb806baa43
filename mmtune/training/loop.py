"""One training loop for every model: fit, evaluate, checkpoint, resume.

The loop is a plain function. Ray Tune sees it through `on_epoch`, which receives each
epoch's metrics and can persist a checkpoint; `mmtune train` uses the same path.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from mmtune.data.arrays import ArrayDataset, Windows
from mmtune.data.datasets import T_IN, MovingMNIST, open_data
from mmtune.errors import MMTuneError
from mmtune.flow import flow_inputs
from mmtune.metrics import MetricAccumulator, VideoLoss
from mmtune.models import get_entry, get_model
from mmtune.training.checkpoint import CheckpointError, check_resume, load_checkpoint, save_checkpoint
from mmtune.training.config import TrainConfig, TrialConfig


@dataclass
class EpochResult:
    """Metrics of one finished epoch."""

    epoch: int  # 1-based
    train_loss: float
    val: dict[str, Any]
    seconds: float  # wall time of this epoch's training + validation
    train_seconds: float
    status: str = "ok"  # ok | diverged
    train_samples: int = 0  # clips trained on (fewer than train_size in a last epoch cut by the time budget)

    @property
    def val_mse(self) -> float:
        """Validation MSE, OpenSTL per-frame convention."""
        return float(self.val.get("mse_frame", math.nan))


@dataclass
class FitResult:
    """What a finished (or stopped) fit leaves behind."""

    status: str  # completed | diverged
    history: list[EpochResult] = field(default_factory=list)
    best_epoch: int | None = None
    best_val_mse: float = math.inf
    message: str = ""


def resolve_device(name: str) -> torch.device:
    """"auto" picks cuda before cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise MMTuneError("device cuda was asked for but no CUDA GPU is visible; use --device cpu")
    return torch.device(name)


class Batches:
    """A split held as uint8 frames (+ optional flow), cut into float batches on the device.

    On CUDA the whole split is copied to the GPU once, still as uint8 (10,000 sequences are
    0.8 GB), so a training step never waits for the host: indexing, the uint8 -> float cast
    and the /255 all run on the GPU. A split that would take more than a quarter of the free
    GPU memory stays on the host and is copied batch by batch (as uint8, a quarter of the
    float bytes). `on_device=False` (the eager path) keeps every split on the host like that.
    On CPU nothing moves.
    """

    def __init__(
        self, frames: np.ndarray, flow: np.ndarray | None, device: torch.device, on_device: bool = True,
        t_in: int = T_IN,
    ) -> None:
        self.device, self.t_in = device, t_in
        self.frames = torch.from_numpy(np.ascontiguousarray(frames))
        self.flow = None if flow is None else torch.from_numpy(np.ascontiguousarray(flow))
        self.on_device = (
            on_device and device.type == "cuda" and _fits_on_device(self.frames, self.flow, device)
        )
        if self.on_device:
            self.frames = self.frames.to(device)
            self.flow = None if self.flow is None else self.flow.to(device)

    def __len__(self) -> int:
        return len(self.frames)

    def get(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y): x (B, t_in, C, 64, 64) inputs (+ flow channels), y (B, t_out, 1, 64, 64) targets."""
        idx = idx.to(self.frames.device)
        clip = self.frames[idx].to(self.device, non_blocking=True).float().div_(255.0).unsqueeze(2)
        x, y = clip[:, : self.t_in], clip[:, self.t_in :]  # (B, t_in, 1, H, W), (B, t_out, 1, H, W)
        if self.flow is not None:
            x = torch.cat([x, self.flow[idx].to(self.device, non_blocking=True).float()], dim=2)
        return x, y

    def iterate(self, batch_size: int, order: torch.Tensor | None = None):
        """Yield (x, y) batches in `order` (default: sequential)."""
        order = torch.arange(len(self)) if order is None else order
        order = order.to(self.frames.device)  # one copy per epoch, not one per batch
        for lo in range(0, len(order), batch_size):
            yield self.get(order[lo : lo + batch_size])


class WindowBatches:
    """A split of an array file: each batch reads its own windows from the file, nothing more.

    The file is never held whole (see `mmtune.data.arrays`); a batch is read as float32 in [0, 1]
    on the host and then moved to the device. Flow channels (`mmtune.flow.flow_inputs`, float16,
    held on the host) are appended to the inputs like `Batches` does.
    """

    def __init__(self, windows: Windows, device: torch.device, t_in: int, flow: np.ndarray | None = None) -> None:
        self.windows, self.device, self.t_in = windows, device, t_in
        self.flow = None if flow is None else torch.from_numpy(np.ascontiguousarray(flow))

    def __len__(self) -> int:
        return len(self.windows)

    def get(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y): x (B, t_in, C, H, W) inputs (+ 2 flow channels), y (B, t_out, C, H, W) targets."""
        idx = idx.cpu()
        clip = torch.from_numpy(self.windows[idx.numpy()]).to(self.device, non_blocking=True)
        x, y = clip[:, : self.t_in], clip[:, self.t_in :]
        if self.flow is not None:
            x = torch.cat([x, self.flow[idx].to(self.device, non_blocking=True).float()], dim=2)
        return x, y

    def iterate(self, batch_size: int, order: torch.Tensor | None = None):
        """Yield (x, y) batches in `order` (default: sequential)."""
        order = torch.arange(len(self)) if order is None else order
        for lo in range(0, len(order), batch_size):
            yield self.get(order[lo : lo + batch_size])


def _fits_on_device(frames: torch.Tensor, flow: torch.Tensor | None, device: torch.device) -> bool:
    """Whether a split takes at most a quarter of the GPU's free memory (packed trials share it)."""
    need = frames.nbytes + (0 if flow is None else flow.nbytes)
    free, _ = torch.cuda.mem_get_info(device)
    return need <= free // 4


def build_optimizer(t: TrainConfig, model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    """AdamW (fused on CUDA with the fast path: one kernel for all parameters), Adam or SGD."""
    params = [p for p in model.parameters() if p.requires_grad]
    if t.optimizer == "adamw":
        fused = device.type == "cuda" and t.fast
        return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay, fused=fused or None)
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)
    return torch.optim.SGD(params, lr=t.lr, momentum=0.9, weight_decay=t.weight_decay)


# OneCycleLR's defaults, which `schedule_factor` follows over a time budget.
PCT_START, DIV_FACTOR, FINAL_DIV_FACTOR = 0.3, 25.0, 1e4


def _cos_between(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (1.0 + math.cos(math.pi * pct))


def schedule_factor(scheduler: str, progress: float) -> float:
    """The lr multiplier at `progress` (0..1) of a run's time budget: OneCycle's shape (cosine warm-up
    over the first 30 %, then cosine decay to lr/25/1e4), cosine decay, or constant 1."""
    p = min(max(progress, 0.0), 1.0)
    if scheduler == "onecycle":
        if p <= PCT_START:
            return _cos_between(1.0 / DIV_FACTOR, 1.0, p / PCT_START)
        return _cos_between(1.0, 1.0 / DIV_FACTOR / FINAL_DIV_FACTOR, (p - PCT_START) / (1.0 - PCT_START))
    if scheduler == "cosine":
        return _cos_between(1.0, 0.0, p)
    return 1.0


def build_scheduler(t: TrainConfig, opt: torch.optim.Optimizer, steps_per_epoch: int,
                    progress: Callable[[], float] | None = None):
    """Per-step schedule: OneCycle (the default), cosine, or constant.

    With `progress` (a run with a time budget: the share of it used, 0..1) the schedule follows
    time instead of the step count, so that it ends when the budget does on any machine.
    """
    if progress is not None:
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: schedule_factor(t.scheduler, progress()))
    total = max(1, t.epochs * steps_per_epoch)
    if t.scheduler == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=t.lr, total_steps=total)
    if t.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


@functools.cache
def cpu_bf16_supported() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX); MMTUNE_CPU_BF16=0/1 overrides.

    Read from /proc/cpuinfo's flags (Linux); elsewhere False, so the CPU path stays fp32. Without
    these instructions bf16 is emulated and slower than fp32.
    """
    flag = os.environ.get("MMTUNE_CPU_BF16", "").strip()
    if flag in ("0", "1"):
        return flag == "1"
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def autocast_enabled(device: torch.device, fast: bool) -> bool:
    """The fast path's bf16 autocast: on CUDA, and on CPUs with native bf16 (`cpu_bf16_supported`)."""
    return fast and (device.type == "cuda" or (device.type == "cpu" and cpu_bf16_supported()))


def _autocast(device: torch.device, fast: bool):
    """bf16 autocast where `autocast_enabled`; a no-op context elsewhere (fp32)."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast_enabled(device, fast))


def fast_path(name: str, device: torch.device, fast: bool) -> bool:
    """Whether a trial of model `name` on `device` runs the fast path it asks for (`TrainConfig.fast`).

    On CUDA only models whose registry entry says it pays (`ModelEntry.cuda_fast`); simple_lstm does
    not: measured slower with it on an H200 (docs/benchmarks.md, "On an NVIDIA H200"). Where it is
    off, bf16 autocast, channels_last and compile are off; the parts that leave the numerics alone
    (fused AdamW, data on the GPU, the loss read back every `SYNC_EVERY` steps) follow `fast` itself.
    """
    return fast and (device.type != "cuda" or get_entry(name).cuda_fast)


def compile_enabled(device: torch.device, fast: bool) -> bool:
    """Whether the fast path compiles the model: on CUDA with triton; MMTUNE_COMPILE overrides.

    Decision: compile on CUDA, not on CPU. On a GPU these small models are launch-bound (many
    small norm/activation/residual kernels per step) and inductor fuses those chains. Measured on
    an H200 (docs/benchmarks.md): the compile costs 24-47 s once per trial process and paid after
    about 400-5,700 steps (conv_tau at OpenSTL size 1.32x eager at batch 16, 1.96x at 64; conv_lstm
    2.55x, 3.20x). On CPU compiling does not pay: it needs a C++ toolchain and takes longer than a
    short CPU trial's gain, so the CPU fast path stays eager.
    MMTUNE_COMPILE=0 turns compiling off everywhere; MMTUNE_COMPILE=1 forces it on (with fast).
    """
    flag = os.environ.get("MMTUNE_COMPILE", "").strip()
    if flag in ("0", "1"):
        return fast and flag == "1"
    return fast and device.type == "cuda" and _has_triton()


def _has_triton() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def prepare_model(
    model: nn.Module,
    name: str,
    device: torch.device,
    fast: bool,
    channels_last: bool | None = None,
    compile: bool | None = None,
) -> nn.Module:
    """Move `model` to `device` and, with the fast path on CUDA, set it up for speed.

    CUDA + fast: channels_last where the model's registry entry asks for it
    (`ModelEntry.channels_last`: cuDNN's NHWC bf16 kernels feed the tensor cores without layout
    transposes; a model without convolutions would only gain copies) and `torch.compile` (see
    `compile_enabled`). The compile is in place (`nn.Module.compile`), so `state_dict()` keys and
    checkpoints are the same as eager ones. CPU: the fast path is bf16 autocast where the CPU has
    native bf16 (see `autocast_enabled`), NCHW; elsewhere fp32 with channels_last where the entry
    asks for it (conv_tau small: 1.26x on one thread, 1.38x on two, gradients within 1e-5 of NCHW;
    `scripts/fp32_cpu.py`). Never channels_last with bf16 on CPU: there, it gives conv_tau's dilated
    depth-wise conv (attn.conv_spatial) weight gradients with a relative error of 0.84-0.96
    (torch 2.14.1, AVX512-BF16), and training diverges; tests/training/test_fast_path.py compares
    the fast path's gradients with fp32 eager.

    Args:
        model: a freshly built model.
        name: its registry name (its entry decides channels_last).
        device: where it trains.
        fast: the fast path (TrainConfig.fast).
        channels_last: override the layout decision (`mmtune bench` measures each speed-up alone).
        compile: override the compile decision.

    Returns:
        The same module object, moved and prepared.
    """
    model = model.to(device)
    if channels_last is None:  # on a CPU only in fp32: there bf16 with channels_last computes wrong gradients
        channels_last = fast and get_entry(name).channels_last and (
            device.type == "cuda" or (device.type == "cpu" and not autocast_enabled(device, fast)))
    if compile is None:
        compile = compile_enabled(device, fast)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compile:
        model.compile()
    return model


def forward_loss(
    model: nn.Module, loss_fn: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, fast: bool
) -> torch.Tensor:
    """The training loss of one batch (a 0-d fp32 tensor); only the forward runs under `_autocast`.

    The loss is computed in fp32 outside autocast: its softmaxes and sums lose too much in bf16.
    """
    with _autocast(device, fast):
        pred = model(x)
    loss, _ = loss_fn(pred.float(), y)
    return loss


def optimizer_step(
    model: nn.Module, loss: torch.Tensor, optimizer: torch.optim.Optimizer, grad_clip: float | None
) -> None:
    """Backward, optional gradient clipping, one optimizer step."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()


# With the fast path on CUDA, the loss is read back (a host-device sync) only every this many
# steps, so the host can queue the next steps while the GPU runs; a NaN/inf is then caught up
# to this many steps late, and the run still ends as "diverged".
SYNC_EVERY = 25


@torch.no_grad()
def evaluate(
    model: nn.Module, batches: Batches | WindowBatches, batch_size: int, fast: bool = False,
    forward_s: list[float] | None = None
) -> dict[str, Any]:
    """All metrics of `model` on a split (see mmtune.metrics), with per-horizon lists; the seconds of
    its forward passes are appended to `forward_s` when one is given (timed on a CPU only: on a GPU
    they would need a sync per batch)."""
    model.eval()
    acc = MetricAccumulator()
    timed = forward_s is not None and batches.device.type == "cpu"
    for x, y in batches.iterate(batch_size):
        t0 = time.perf_counter() if timed else 0.0
        with _autocast(batches.device, fast):
            pred = model(x)
        if timed and forward_s is not None:
            forward_s.append(time.perf_counter() - t0)
        acc.update(pred.float().clamp_(0, 1), y)
    return acc.compute()


def _load_model_state(model: nn.Module, state: dict[str, Any], what: str) -> None:
    """model.load_state_dict, with a file whose weights do not fit its own config as one line."""
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{what}: its weights do not fit the model its config names ({first})") from None


class Trainer:
    """State of one run: model, optimizer, scheduler, data; `fit()` runs the epochs."""

    def __init__(self, trial: TrialConfig, data: MovingMNIST | ArrayDataset | None = None,
                 progress: bool = True) -> None:
        self.trial = trial
        self.device = resolve_device(trial.train.device)
        self.data = data or open_data(trial.data)  # an array file is checked whole here, before anything is written
        self.spec = self.data.spec
        self.progress = progress
        torch.manual_seed(trial.train.seed)
        self.fast = fast_path(trial.model, self.device, trial.train.fast)
        self.model = prepare_model(get_model(trial.model, trial.model_cfg), trial.model, self.device, self.fast)
        self.loss_fn = VideoLoss(kl_weight=trial.kl_weight)
        self.train_size = trial.data.train_size
        self.steps_per_epoch = math.ceil(self.train_size / trial.train.batch_size)
        self.optimizer = build_optimizer(trial.train, self.model, self.device)
        # With a time budget: when fit() started, and the last validation's seconds (kept for the end).
        self._clock: tuple[float, float] | None = None
        self.val_seconds_guess = 0.0  # with a time budget: what a validation takes, until one has been timed
        self.out_of_time = False
        self.last_train_samples = 0  # clips the last train_epoch trained on
        timed = trial.train.time_budget_s is not None
        self.scheduler = build_scheduler(trial.train, self.optimizer, self.steps_per_epoch,
                                         self.budget_used if timed else None)
        self.epoch = 0  # epochs completed
        self.history: list[EpochResult] = []
        self.best_val_mse = math.inf
        self.best_epoch: int | None = None
        self._train: Batches | WindowBatches | None = None
        self._val: Batches | WindowBatches | None = None
        # On a CPU: ms per clip of the last validation's forward passes (its inference time, for free).
        self.val_ms_per_clip: float | None = None

    # -- data -------------------------------------------------------------------------------
    def split(self, name: str, epoch: int = 0) -> Batches | WindowBatches:
        """A split's batches, with the flow channels the config asks for."""
        flow = flow_inputs(self.data, name, self.trial.train.flow, epoch, progress=self.progress)
        if isinstance(self.data, ArrayDataset):  # read window by window; flow: farneback on the channel mean
            return WindowBatches(self.data.frames(name, epoch), self.device, self.spec.t_in, flow)
        frames = self.data.frames(name, epoch)
        return Batches(frames, flow, self.device, on_device=self.trial.train.fast, t_in=self.spec.t_in)

    def val_batches(self) -> Batches | WindowBatches:
        """The validation split's batches, built once (the same clips every epoch)."""
        if self._val is None:
            self._val = self.split("val")
        return self._val

    def _train_batches(self, epoch: int) -> Batches | WindowBatches:
        if self._train is None or self.trial.data.online:
            self._train = self.split("train", epoch)
        return self._train

    # -- state ------------------------------------------------------------------------------
    def state_dict(self, optimizer: bool = True) -> dict[str, Any]:
        """Everything a resumed run needs to continue identically, as plain data.

        Args:
            optimizer: also the optimizer and scheduler state (two thirds of an AdamW checkpoint).
                Without them the checkpoint serves evaluation, or a resume of a finished run.
        """
        state: dict[str, Any] = {
            "trial": self.trial.to_dict(),
            "model": self.model.state_dict(),
            "epoch": self.epoch,
            "best_val_mse": self.best_val_mse,
            "best_epoch": self.best_epoch,
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }
        if optimizer:
            state["optimizer"] = self.optimizer.state_dict()
            state["scheduler"] = self.scheduler.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any], source: str = "the checkpoint") -> None:
        """Restore from `state_dict()` output (a finished run's may lack the optimizer state)."""
        if "optimizer" not in state and int(state["epoch"]) < self.trial.train.epochs:
            raise MMTuneError(f"{source} holds the weights only: it can be evaluated, not continued")
        _load_model_state(self.model, state, source)
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
        self.epoch = int(state["epoch"])
        self.best_val_mse = float(state["best_val_mse"])
        self.best_epoch = state["best_epoch"]
        torch.set_rng_state(state["rng_cpu"])
        if state.get("rng_cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])

    def save(self, path: str | Path, optimizer: bool = True) -> Path:
        """Write a checkpoint of the current state (see `state_dict` for `optimizer`)."""
        return save_checkpoint(self.state_dict(optimizer), path)

    @property
    def finished(self) -> bool:
        """Every planned epoch is done (or the time budget is): a checkpoint now needs no optimizer state."""
        return self.epoch >= self.trial.train.epochs or self.out_of_time

    def _of_planned(self) -> str:
        if self.trial.train.time_budget_s is None:
            return f"/{self.trial.train.epochs}"
        return f" ({min(self.budget_used(), 1.0):.0%} of {self.trial.train.time_budget_s:.0f}s)"

    def budget_used(self) -> float:
        """The share of the time budget used (0 before fit starts), the last validation's time kept
        back so that the final validation also ends within it."""
        budget = self.trial.train.time_budget_s
        if budget is None or self._clock is None:
            return 0.0
        start, val_s = self._clock
        return (time.perf_counter() - start) / max(budget - val_s, 1e-9)

    def resume(self, path: str | Path) -> None:
        """Continue from a checkpoint written by `save()`, after checking it was trained as this run asks.

        Raises:
            CheckpointError: the file is missing, corrupt, truncated or not plain data.
            MMTuneError: it was trained with another model, model config, data or schedule.
        """
        state = load_checkpoint(path)
        check_resume(state, self.trial, f"checkpoint {path}")
        self.load_state_dict(state, f"checkpoint {path}")

    def load_weights(self, path: str | Path) -> None:
        """Load a checkpoint's model weights (for evaluation), after checking its model and config."""
        state = load_checkpoint(path)
        check_resume(state, self.trial, f"checkpoint {path}", weights_only=True)
        _load_model_state(self.model, state, f"checkpoint {path}")
        self.epoch = int(state["epoch"])

    # -- epochs -----------------------------------------------------------------------------
    def train_epoch(self) -> tuple[float, str]:
        """One pass over the training split; returns (mean loss, status)."""
        epoch = self.epoch
        batches = self._train_batches(epoch)
        gen = torch.Generator().manual_seed(self.trial.train.seed * 100_003 + epoch)
        order = torch.randperm(len(batches), generator=gen)
        self.model.train()
        total, count = 0.0, 0
        bar = tqdm(
            batches.iterate(self.trial.train.batch_size, order),
            total=self.steps_per_epoch,
            desc=f"epoch {epoch + 1}/{self.trial.train.epochs}",
            disable=not self.progress,
            file=sys.stderr,
            leave=False,
        )
        fast = self.fast
        lazy = self.trial.train.fast and self.device.type == "cuda"  # numerics-neutral: kept where fast_path is off
        running = torch.zeros((), device=self.device)  # sum of loss * batch size since the last sync
        timed = self.trial.train.time_budget_s is not None
        for step, (x, y) in enumerate(bar, 1):
            if timed and step > 1 and self.budget_used() >= 1.0:
                self.out_of_time = True  # the budget is used: this epoch ends here, part-way
                break
            loss = forward_loss(self.model, self.loss_fn, x, y, self.device, fast)
            if not lazy and not torch.isfinite(loss):
                bar.close()
                return math.nan, "diverged"
            optimizer_step(self.model, loss, self.optimizer, self.trial.train.grad_clip)
            self.scheduler.step()
            count += len(x)
            if not lazy:
                total += loss.item() * len(x)
            else:
                running += loss.detach() * len(x)
                if step % SYNC_EVERY:
                    continue
                total += running.item()
                running.zero_()
                if not math.isfinite(total):
                    bar.close()
                    return math.nan, "diverged"
            bar.set_postfix(loss=f"{total / count:.4f}")
        total += running.item()
        self.last_train_samples = count
        if not math.isfinite(total):
            return math.nan, "diverged"
        if timed and self.budget_used() >= 1.0:
            self.out_of_time = True
        return total / max(count, 1), "ok"

    def fit(self, on_epoch: Callable[[EpochResult, Trainer], None] | None = None) -> FitResult:
        """Train until `epochs` (or the time budget), validating every epoch; stop with status "diverged" on NaN/inf."""
        val = self.val_batches()
        self._clock, self.out_of_time = (time.perf_counter(), self.val_seconds_guess), False
        self.last_train_samples = 0
        timed = self.trial.train.time_budget_s is not None
        while self.epoch < self.trial.train.epochs and not self.out_of_time:
            if timed and self.history and self.budget_used() >= 1.0:
                self.out_of_time = True  # the last validation used what was left: no epoch of a few steps
                break
            t0 = time.perf_counter()
            loss, status = self.train_epoch()
            t_train = time.perf_counter() - t0
            t_val, forward_s = time.perf_counter(), list[float]()
            metrics = evaluate(self.model, val, self.trial.train.eval_batch(self.device.type), self.fast,
                               forward_s)
            if forward_s:
                self.val_ms_per_clip = 1000.0 * sum(forward_s) / len(val)
            self._clock = (self._clock[0], time.perf_counter() - t_val)
            if status == "ok" and not math.isfinite(metrics["mse_frame"]):
                status = "diverged"
            self.epoch += 1
            result = EpochResult(self.epoch, loss, metrics, time.perf_counter() - t0, t_train, status,
                                 self.last_train_samples)
            if status == "ok" and result.val_mse < self.best_val_mse:
                self.best_val_mse, self.best_epoch = result.val_mse, self.epoch
            self.history.append(result)
            if self.progress:
                print(
                    f"epoch {self.epoch}{self._of_planned()}  train_loss {loss:.5f}  "
                    f"val mse_frame {result.val_mse:.2f}  mse_pixel255 {metrics['mse_pixel255']:.1f}  "
                    f"({result.seconds:.1f}s)",
                    file=sys.stderr,
                )
            if on_epoch is not None:
                on_epoch(result, self)
            if status == "diverged":
                return FitResult(
                    "diverged", self.history, self.best_epoch, self.best_val_mse,
                    f"loss became NaN/inf in epoch {self.epoch}; lower the lr (now {self.trial.train.lr})",
                )
        return FitResult("completed", self.history, self.best_epoch, self.best_val_mse)

    def test(self) -> dict[str, Any]:
        """All metrics on the held-out test split."""
        return evaluate(self.model, self.split("test"), self.trial.train.eval_batch(self.device.type),
                        self.fast)

    @torch.no_grad()
    def predict(self, split: str = "test", n: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(inputs, truth, prediction) of the first `n` clips of a split in [0,1]: each (n, T, H, W) for
        one channel (Moving MNIST's (n, 10, 64, 64)), else (n, T, C, H, W)."""
        self.model.eval()
        x, y = (self.val_batches() if split == "val" else self.split(split)).get(torch.arange(n))
        with _autocast(self.device, self.fast):
            pred = self.model(x).float().clamp(0, 1)
        c = self.spec.channels
        keep = (slice(None), slice(None), 0) if c == 1 else (slice(None), slice(None), slice(0, c))
        return x[keep].cpu().numpy(), y[keep].cpu().numpy(), pred[keep].cpu().numpy()
