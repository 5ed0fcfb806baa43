"""A synthetic experiment directory, shaped like the one run_search.py writes, for the report tests."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

NAN = math.nan
ITER_S = 10.0  # time_this_iter_s of every synthetic epoch

# (trial_id, model, status, stopped_early, diverged, val_mse per epoch, params)
TRIALS: list[tuple[str, str, str, bool, bool, list[float], dict[str, Any]]] = [
    ("s1", "simple_lstm", "TERMINATED", False, False, [80.0, 60.0, 55.0], {"lr": 1e-3, "simple_lstm.hidden": 64}),
    ("s2", "simple_lstm", "TERMINATED", False, False, [90.0, 70.0, 58.0], {"lr": 1e-2, "simple_lstm.hidden": 128}),
    ("s3", "simple_lstm", "TERMINATED", True, False, [120.0], {"lr": 1e-4, "simple_lstm.hidden": 32}),
    # conv_lstm: no completed trial (one crashed, one went NaN at its first epoch).
    ("l1", "conv_lstm", "ERROR", False, False, [NAN], {"lr": 1e-3, "conv_lstm.layers": 2}),
    ("l2", "conv_lstm", "TERMINATED", False, True, [NAN], {"lr": 5e-2, "conv_lstm.layers": 3}),
    ("t1", "conv_tau", "TERMINATED", False, False, [50.0, 40.0, 30.0], {"lr": 1e-3, "conv_tau.N_T": 4,
                                                                         "conv_tau.flow": "none"}),
    ("t2", "conv_tau", "TERMINATED", False, False, [45.0, 35.0, 28.0], {"lr": 3e-3, "conv_tau.N_T": 8,
                                                                         "conv_tau.flow": "farneback"}),
    ("t3", "conv_tau", "TERMINATED", True, False, [70.0], {"lr": 1e-4, "conv_tau.N_T": 2, "conv_tau.flow": "none"}),
    ("t4", "conv_tau", "TERMINATED", False, True, [60.0, 52.0, NAN], {"lr": 1e-1, "conv_tau.N_T": 6,
                                                                       "conv_tau.flow": "farneback"}),
]
BEST = {"simple_lstm": ("s1", 3, 55.0), "conv_tau": ("t2", 3, 28.0)}
TEST_MSE = {"simple_lstm": 57.0, "conv_tau": 29.5}
# Test-split baselines: simple_lstm (57.0) loses to the best of them, conv_tau (29.5) beats it.
BASELINE_MSE = {"blank": 40.0, "mean_frame": 35.0, "last_frame": 60.0, "input_mean": 50.0}


def _rows() -> list[dict[str, Any]]:
    params = sorted({p for t in TRIALS for p in t[6]})
    rows = []
    for tid, model, status, early, diverged, vals, ps in TRIALS:
        for epoch, v in enumerate(vals, start=1):
            row: dict[str, Any] = {
                "trial_id": tid, "model": model, "epoch": epoch, "val_mse": v,
                "val_mse_pixel255": v * 65025 / 4096, "val_mae": v * 2.5, "val_ssim": 0.5 + 1 / (1 + v),
                "val_psnr": 30.0 - v / 10, "train_loss": v / 4096,
                "status": status, "stopped_early": early, "diverged": diverged and not math.isfinite(v),
                "error": "RuntimeError: CUDA out of memory" if status == "ERROR" else None,
                "node_ip": "10.0.0.1", "hostname": "test-host", "time_this_iter_s": ITER_S,
                "train_seconds": ITER_S * epoch, "config/model": model,
            }
            for p in params:
                row[f"config/{p}"] = ps.get(p, NAN if not p.endswith("flow") else None)
            rows.append(row)
    return rows


def _test_block(mse: float) -> dict[str, Any]:
    steps = [mse * (0.5 + k / 10) for k in range(10)]
    return {"mse_frame": mse, "mse_pixel255": mse * 65025 / 4096, "mae_frame": mse * 2.4, "ssim": 0.8, "psnr": 25.0,
            "mse_frame_per_step": steps, "mse_pixel255_per_step": [s * 65025 / 4096 for s in steps],
            "ssim_per_step": [0.9 - k / 50 for k in range(10)]}


def write_experiment(root: Path, *, status: str = "completed", missing: tuple[str, ...] = ()) -> Path:
    """Write a synthetic EXP under `root`; `missing` names files (or 'predictions') to leave out."""
    exp = root / "synthetic-sweep"
    exp.mkdir(parents=True, exist_ok=True)
    if "results.parquet" not in missing:
        pd.DataFrame(_rows()).to_parquet(exp / "results.parquet")
    if "best_configs.json" not in missing:
        best = {m: {"trial_id": tid, "params": next(t[6] for t in TRIALS if t[0] == tid),
                    "trial_config": {"model": m, "model_cfg": {"hidden": 64}, "train": {"epochs": 3, "lr": 1e-3},
                                     "data": {"train_size": 64}},
                    "best_epoch": ep, "val_mse": v, "val_mse_pixel255": v * 65025 / 4096,
                    "checkpoint": f"trials/{tid}/best.pt"} for m, (tid, ep, v) in BEST.items()}
        (exp / "best_configs.json").write_text(json.dumps(best))
    if "test_metrics.json" not in missing:
        tm = {m: {"trial_id": BEST[m][0], "test": _test_block(v)} for m, v in TEST_MSE.items()}
        (exp / "test_metrics.json").write_text(json.dumps(tm))
    if "baselines.json" not in missing:
        base = {"train_mean": 0.05, "splits": {"test": {"size": 64, "metrics": {
            k: _test_block(v) for k, v in BASELINE_MSE.items()}}}}
        (exp / "baselines.json").write_text(json.dumps(base))
    if "predictions" not in missing:
        (exp / "predictions").mkdir(exist_ok=True)
        rng = np.random.default_rng(0)
        for m in BEST:
            truth = rng.random((2, 10, 64, 64), dtype=np.float32)
            np.savez(exp / "predictions" / f"{m}.npz", inputs=rng.random((2, 10, 64, 64), dtype=np.float32),
                     truth=truth, pred=np.clip(truth + 0.1, 0, 1))
    if "sweep.json" not in missing:
        sweep = {"name": "synthetic-sweep", "space": {"models": ["simple_lstm", "conv_lstm", "conv_tau"]},
                 "start": "2026-11-20T10:00:00", "end": None if status == "running" else "2026-11-20T11:00:00",
                 "wall_seconds": None if status == "running" else 3600.0, "status": status, "num_trials": 12,
                 "hardware": {"logical_cpus": 2, "gpu": None}, "versions": {"torch": "2.9", "ray": "2.60",
                                                                        "optuna": "5.0"},
                 "resources_per_trial": {"cpu": 2, "gpu": 0}}
        (exp / "sweep.json").write_text(json.dumps(sweep))
    return exp


@pytest.fixture
def make_exp(tmp_path: Path) -> Callable[..., Path]:
    """A factory: make_exp(status=..., missing=(...)) -> a fresh synthetic experiment directory."""
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
        self.plot_divs = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if dict(attrs).get("class", "") and "plotly-graph-div" in (dict(attrs).get("class") or ""):
            self.plot_divs += 1
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
