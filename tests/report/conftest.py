"""A synthetic experiment directory, written through mmtune.experiment as run_search.py writes it,
for the report tests."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from mmtune.experiment import (
    BASELINES_FILE,
    BEST_CONFIGS_FILE,
    COST_COLUMNS,
    PREDICTIONS_DIR,
    RESULTS_FILE,
    SPACE_FILE,
    SWEEP_FILE,
    TEST_METRICS_FILE,
    Baselines,
    BestConfig,
    ClusterInfo,
    EffectiveSettings,
    Prediction,
    RunRecord,
    SplitBaselines,
    SweepMeta,
    TestResult,
    TrialRecord,
    results_frame,
    trial_counts,
    write_baselines,
    write_best_configs,
    write_prediction,
    write_results,
    write_sweep,
    write_test_metrics,
)
from mmtune.metrics.baselines import BASELINES, verdict
from mmtune.metrics.units import UNITS
from mmtune.search.plan import SweepArgs
from mmtune.search.spaces import parse_space
from mmtune.search.trial_log import DIVERGED_VAL_MSE

NAN = math.nan
ITER_S = 10.0  # time_this_iter_s of every synthetic epoch
EPOCHS = 3  # every trial's budget: a TERMINATED trial with fewer epochs was stopped early by ASHA
SPACE = """
model: {choices: [simple_lstm, conv_lstm, conv_tau]}
shared: {lr: {type: float, low: 1.0e-4, high: 1.0e-1, log: true}, epochs: 3}
models:
  simple_lstm: {preset: small, hidden: {type: categorical, choices: [32, 64, 128]}}
  conv_lstm: {preset: small, kernel_size: {type: categorical, choices: [3, 5]}}
  conv_tau: {preset: small, N_T: {type: int, low: 2, high: 8}, flow: {type: categorical, choices: [none, farneback]}}
data: {train_size: 64, val_size: 32, test_size: 64}
"""

# (trial_id, model, Ray's status, val_mse per epoch (NaN: it diverged there), params)
TRIALS: list[tuple[str, str, str, list[float], dict[str, Any]]] = [
    ("s1", "simple_lstm", "TERMINATED", [80.0, 60.0, 55.0], {"lr": 1e-3, "simple_lstm.hidden": 64}),
    ("s2", "simple_lstm", "TERMINATED", [90.0, 70.0, 58.0], {"lr": 1e-2, "simple_lstm.hidden": 128}),
    ("s3", "simple_lstm", "TERMINATED", [120.0], {"lr": 1e-4, "simple_lstm.hidden": 32}),  # ASHA stopped it
    # conv_lstm: no completed trial (one crashed before its first epoch, one went NaN at its first).
    ("l1", "conv_lstm", "ERROR", [], {"lr": 1e-3, "conv_lstm.kernel_size": 3}),
    ("l2", "conv_lstm", "TERMINATED", [NAN], {"lr": 5e-2, "conv_lstm.kernel_size": 5}),
    ("t1", "conv_tau", "TERMINATED", [50.0, 40.0, 30.0], {"lr": 1e-3, "conv_tau.N_T": 4, "conv_tau.flow": "none"}),
    ("t2", "conv_tau", "TERMINATED", [45.0, 35.0, 28.0], {"lr": 3e-3, "conv_tau.N_T": 8,
                                                          "conv_tau.flow": "farneback"}),
    ("t3", "conv_tau", "TERMINATED", [70.0], {"lr": 1e-4, "conv_tau.N_T": 2, "conv_tau.flow": "none"}),
    ("t4", "conv_tau", "TERMINATED", [60.0, 52.0, NAN], {"lr": 1e-1, "conv_tau.N_T": 6,
                                                         "conv_tau.flow": "farneback"}),
]
# What each trial's config costs (params, FLOPs per training sample, inference ms/clip), as TrialLog
# reports it. Best val MSE against either cost, the fronts: simple_lstm s3 -> s1 (s2 is dearer and
# worse than s1), conv_tau t4 -> t1 -> t2 (t1 beats t3), across families s3 -> s1 -> t4 -> t1 -> t2.
COST = {"s1": (1_200_000, 2.0e9, 3.0), "s2": (2_500_000, 3.0e9, 4.0), "s3": (300_000, 0.5e9, 1.0),
        "l1": (800_000, 1.5e9, 2.0), "l2": (800_000, 1.5e9, 2.0), "t1": (4_000_000, 6.0e9, 8.0),
        "t2": (6_000_000, 9.0e9, 11.0), "t3": (5_000_000, 7.0e9, 9.0), "t4": (3_500_000, 5.0e9, 7.0)}
FRONT = {"s1", "s3", "t1", "t2", "t4"}  # on a front (a family's or across families, by FLOPs or params)
TRAIN_SIZE = 64  # SPACE's data.train_size: samples per epoch
BEST = {"simple_lstm": ("s1", 3, 55.0), "conv_tau": ("t2", 3, 28.0)}
TEST_MSE = {"simple_lstm": 57.0, "conv_tau": 29.5}
# Test-split baselines: simple_lstm (57.0) loses to the best of them, conv_tau (29.5) beats it.
BASELINE_MSE = {"blank": 40.0, "mean_frame": 35.0, "last_frame": 60.0, "input_mean": 50.0}
SAMPLES = 12  # planned (sweep.json's effective.samples); TRIALS are the ones that ran
STARTED = "2026-11-20T10:00:00+0000"
T0 = 1_795_168_800  # STARTED in seconds since the epoch: trial number i reports epoch e at T0 + 60 (i + 1) + ITER_S e
HARDWARE = {"cpu": "Synthetic CPU", "cores": 2, "logical_cpus": 2, "memory_gb": 8.0, "gpu": None,
            "platform": "Linux", "versions": {"python": "3.11.7", "torch": "2.9", "ray": "2.60", "optuna": "5.0"}}


def _ray_row(tid: str, model: str, epoch: int, v: float, params: dict[str, Any], number: int,
             cost: bool = True) -> dict[str, Any]:
    """One row as Ray records it: TrialLog's metrics (with its cost unless `cost` is False: a sweep from
    before costs were recorded), Ray's own columns, the flattened config."""
    config = {"model": model, "optuna_trial": number, **params}
    diverged = not math.isfinite(v)

    def nan_if(x: float) -> float:  # a diverged epoch's metrics are NaN
        return NAN if diverged else x

    n_params, flops, infer_ms = COST[tid]
    costs = dict(zip(COST_COLUMNS, (n_params, flops, nan_if(TRAIN_SIZE / ITER_S), infer_ms), strict=True))
    return {**(costs if cost else {}),
        "val_mse": DIVERGED_VAL_MSE if diverged else v, "epoch": epoch, "train_loss": nan_if(v / 4096),
        "val_ssim": nan_if(0.5 + 1 / (1 + v)), "val_mse_raw": v, "val_mse_pixel255": nan_if(v * 65025 / 4096),
        "val_mae": nan_if(v * 2.5), "val_psnr": nan_if(30.0 - v / 10), "epochs_planned": EPOCHS,
        "train_seconds": ITER_S, "epoch_seconds": ITER_S, "train_seconds_total": ITER_S * epoch,
        "fn_seconds": ITER_S * epoch + 1, "resumed_from_epoch": 0, "resume_note": "", "diverged": diverged,
        "model": model, "node_ip": "10.0.0.1", "hostname": "test-host", "node_id": "n1",
        "time_this_iter_s": ITER_S, "time_total_s": ITER_S * epoch + 1, "training_iteration": epoch,
        "timestamp": int(T0 + 60 * (number + 1) + ITER_S * epoch), "trial_id": tid,
        **{f"config/{k}": value for k, value in config.items()},
    }


def _trials(cost: bool = True) -> list[TrialRecord]:
    return [TrialRecord(tid, status, {"model": model, "optuna_trial": i, **ps},
                        [_ray_row(tid, model, e, v, ps, i, cost) for e, v in enumerate(vals, start=1)],
                        "RuntimeError: CUDA out of memory" if status == "ERROR" else None, f"/x/trial_{tid}")
            for i, (tid, model, status, vals, ps) in enumerate(TRIALS)]


def _test_block(mse: float) -> dict[str, Any]:
    steps = [mse * (0.5 + k / 10) for k in range(10)]
    return {"mse_frame": mse, "mse_pixel255": mse * 65025 / 4096, "mae_frame": mse * 2.4, "ssim": 0.8, "psnr": 25.0,
            "mse_frame_per_step": steps, "mse_pixel255_per_step": [s * 65025 / 4096 for s in steps],
            "ssim_per_step": [0.9 - k / 50 for k in range(10)]}


def _sweep_meta(exp: Path, status: str, df: pd.DataFrame) -> SweepMeta:
    started = STARTED if status != "running" else time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(time.time() - 600))
    args = SweepArgs(space="synthetic.yaml", samples=SAMPLES, cpus_per_trial=2.0, storage=str(exp.parent),
                     name=exp.name, report=False)
    meta = SweepMeta(
        name=exp.name, models=("simple_lstm", "conv_lstm", "conv_tau"), args=args.to_dict(),
        effective=EffectiveSettings(SAMPLES, EPOCHS, 1, 2, 1, 2.0, 0.0, {"seed": 0, "device": "cpu"}),
        space="synthetic.yaml", space_copy=SPACE_FILE, storage=str(exp.parent), exp_dir=str(exp),
        cluster=ClusterInfo(None, 2.0, 0.0, 1, 2.0, 0.0), hardware=HARDWARE,
        started=started, runs=(RunRecord(started, False),), status="running",
    )
    if status == "running":
        return meta
    ended = "2026-11-20T11:00:00+0000"
    return dataclasses.replace(meta, status=status, ended=ended, wall_seconds=3600.0, tune_seconds=3500.0,
                               runs=(RunRecord(STARTED, False, ended, 3600.0, status),), **trial_counts(df))


def write_experiment(root: Path, *, status: str = "completed", missing: tuple[str, ...] = (),
                     cost: bool = True) -> Path:
    """Write a synthetic EXP under `root` through mmtune.experiment, as a sweep does;
    `missing` names files (or 'predictions') to leave out; `cost=False`: rows without cost columns."""
    exp = root / "synthetic-sweep"
    exp.mkdir(parents=True, exist_ok=True)
    (exp / SPACE_FILE).write_text(SPACE)
    space = parse_space(yaml.safe_load(SPACE), "synthetic.yaml")
    trials = _trials(cost)
    df = results_frame(trials)
    if RESULTS_FILE not in missing:
        write_results(exp, df)
    params = {t[0]: t[4] for t in TRIALS}
    if BEST_CONFIGS_FILE not in missing:
        write_best_configs(exp, {m: BestConfig(
            tid, params[tid], space.trial_config({"model": m, **params[tid]}).to_dict(), ep, v, v * 65025 / 4096, 0.6,
            optuna_trial=next(i for i, t in enumerate(TRIALS) if t[0] == tid),
            checkpoint=f"{exp}/trial_{tid}/checkpoint_{ep - 1:06d}", checkpoint_epoch=ep)
            for m, (tid, ep, v) in BEST.items()})
    base = {k: _test_block(v) for k, v in BASELINE_MSE.items()}
    if TEST_METRICS_FILE not in missing:
        write_test_metrics(exp, {m: TestResult(
            BEST[m][0], _test_block(v), BEST[m][1], f"{exp}/trial_{BEST[m][0]}/checkpoint_{BEST[m][1] - 1:06d}",
            BEST[m][2], 64, dict(UNITS), verdict(v, base)._asdict()) for m, v in TEST_MSE.items()})
    if BASELINES_FILE not in missing:
        write_baselines(exp, Baselines(0.05, dict(BASELINES), {"val": SplitBaselines(32, base),
                                                                "test": SplitBaselines(64, base)}))
    if PREDICTIONS_DIR not in missing:
        rng = np.random.default_rng(0)
        for m, (tid, ep, _) in BEST.items():
            truth = rng.random((2, 10, 64, 64), dtype=np.float32)
            pred = Prediction(rng.random((2, 10, 64, 64), dtype=np.float32), truth, np.clip(truth + 0.1, 0, 1))
            write_prediction(exp, m, pred, tid, ep)
    if SWEEP_FILE not in missing:
        write_sweep(exp, _sweep_meta(exp, status, df))
    return exp


@pytest.fixture
def make_exp(tmp_path: Path) -> Callable[..., Path]:
    """A factory: make_exp(status=..., missing=(...), cost=...) -> a fresh synthetic experiment directory."""
    count = iter(range(1000))
    return lambda **kw: write_experiment(tmp_path / f"e{next(count)}", **kw)


@pytest.fixture
def synthetic() -> Any:
    """This module, for the tests that check records against TRIALS, TEST_MSE and ITER_S."""
    import sys

    return sys.modules[__name__]


# --- the HTML -------------------------------------------------------------------------------------

_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class _Balance(HTMLParser):
    """Checks that every non-void tag is closed in order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.plot_ids: list[str] = []  # the id of every plotly figure's div

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if "plotly-graph-div" in (a.get("class") or ""):
            self.plot_ids.append(str(a.get("id")))
        if tag not in _VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'} at {self.getpos()}")
            return
        self.stack.pop()


def _check_html(path: Path) -> _Balance:
    """Parse the report; assert tags balance and plotly.js is embedded exactly once."""
    text = path.read_text(encoding="utf-8")
    p = _Balance()
    p.feed(text)
    p.close()
    assert p.errors == []
    assert p.stack == []
    assert len(re.findall(r"\* plotly\.js v\d", text)) == 1, "plotly.js must be embedded exactly once"
    assert not re.search(r"<script[^>]*\bsrc=", text), "scripts must be inline"
    markup = re.sub(r"<script[^>]*>.*?</script>", "", text, flags=re.S)  # plotly.js itself names URLs
    assert not re.search(r"""(src|href)=["']?https?:""", markup), "the report must not load anything online"
    return p



@pytest.fixture
def check_html() -> Callable[[Path], _Balance]:
    """check_html(report): parse it, assert tags balance, plotly.js is in it once, nothing loads online."""
    return _check_html


# --- headless Chromium ------------------------------------------------------------------------------

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "report"
_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          "--enable-unsafe-swiftshader",  # parcoords draws with WebGL: allow its software fallback
          "--hide-scrollbars"]
# Records uncaught errors, rejected promises and console.error calls where --dump-dom shows them.
_ERROR_HOOK = """<script>(function () {
  var errs = [], root = document.documentElement;
  function note(m) { errs.push(String(m)); root.setAttribute('data-console-errors', JSON.stringify(errs)); }
  root.setAttribute('data-console-errors', '[]');
  window.addEventListener('error', function (e) { note('Uncaught ' + e.message); });
  window.addEventListener('unhandledrejection', function (e) { note('Unhandled rejection ' + e.reason); });
  var ce = console.error; console.error = function () { note([].join.call(arguments, ' ')); ce.apply(console, arguments); };
})();</script>"""


class Rendered:
    """What headless Chromium made of a report."""

    def __init__(self, dom: str, stderr: str, screenshot: Path) -> None:
        self.dom, self.stderr, self.screenshot = dom, stderr, screenshot

    @property
    def console_errors(self) -> list[str]:
        import html
        import re

        m = re.search(r'data-console-errors="([^"]*)"', self.dom)
        assert m, "the error hook did not run: the page's scripts did not execute"
        errs = json.loads(html.unescape(m.group(1)))
        errs += [line for line in self.stderr.splitlines() if "Uncaught" in line]
        return errs

    def plots(self) -> dict[str, bool]:
        """Each plotly div's id -> whether it holds a rendered .main-svg."""
        import re

        # Each piece runs from one plot's div to the next: its svg, if rendered, is inside it.
        parts = re.split(r'(?=<div id="[^"]+" class="plotly-graph-div)', self.dom)[1:]
        out = {}
        for p in parts:
            div_id = re.match(r'<div id="([^"]+)"', p).group(1)  # type: ignore[union-attr]
            out[div_id] = 'class="main-svg"' in p
        return out


def _find_or_install_chromium() -> str | None:
    import shutil
    import subprocess

    for name in ("chromium", "chromium-browser", "/usr/bin/chromium"):
        if found := shutil.which(name):
            return found
    if shutil.which("apt-get") is None:
        return None
    try:
        subprocess.run(["apt-get", "install", "-y", "chromium"], capture_output=True, timeout=900, check=True,
                       env={**__import__("os").environ, "DEBIAN_FRONTEND": "noninteractive"})
    except (subprocess.SubprocessError, OSError):
        return None
    return shutil.which("chromium")


@pytest.fixture(scope="session")
def chromium() -> str:
    """The path of Debian's chromium, installed once with apt-get if absent (else the test skips)."""
    path = _find_or_install_chromium()
    if path is None:
        pytest.skip("no chromium: not on PATH and `apt-get install -y chromium` failed or is unavailable")
    return path


@pytest.fixture
def render(chromium: str, tmp_path: Path) -> Callable[[Path, str], Rendered]:
    """render(report, name): open the report in headless Chromium; keep test-artifacts/report/NAME.png."""
    import subprocess

    def run(report: Path, name: str) -> Rendered:
        text = report.read_text(encoding="utf-8")
        hooked = tmp_path / f"{name}-hooked.html"
        hooked.write_text(text.replace("<head>", "<head>\n" + _ERROR_HOOK, 1), encoding="utf-8")
        base = [chromium, *_FLAGS, "--virtual-time-budget=10000"]
        dom = subprocess.run([*base, f"--user-data-dir={tmp_path / 'ud-dom'}", "--enable-logging=stderr", "--v=0",
                              "--dump-dom", hooked.as_uri()], capture_output=True, text=True, timeout=180)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / f"{name}.png"
        shot.unlink(missing_ok=True)
        subprocess.run([*base, f"--user-data-dir={tmp_path / 'ud-shot'}", "--window-size=1400,4000",
                        f"--screenshot={shot}", report.resolve().as_uri()], capture_output=True, timeout=180)
        return Rendered(dom.stdout, dom.stderr, shot)

    return run
