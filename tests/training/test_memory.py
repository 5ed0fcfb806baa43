"""Will a config fit? The estimate from a meta-device model, and `mmtune train` refusing one that cannot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmtune.models.registry import get_model
from mmtune.search.spaces import load_space
from mmtune.training.config import build_trial
from mmtune.training.memory import BYTES_PER_PARAM, does_not_fit, estimate

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("model", ["conv_tau", "conv_lstm", "simple_lstm"])
def test_the_estimate_counts_the_real_models_parameters_and_activations(model: str) -> None:
    trial = build_trial(model, "small", train_overrides={"batch_size": 2, "device": "cpu"})
    real = get_model(trial.model, trial.model_cfg)
    n = sum(p.numel() for p in real.parameters())
    est = estimate(trial)
    assert est.params == n and est.param_bytes == n * BYTES_PER_PARAM
    # The activations the meta pass counts are those a real CPU forward saves for backward.
    saved = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += t.numel() * t.element_size()
        return t

    x = torch.rand(2, trial.model_cfg.t_in, trial.model_cfg.in_channels, 64, 64)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        real.train()
        real(x)
    assert est.activation_bytes is not None and 0.9 * saved <= est.activation_bytes <= 1.1 * saved


def test_activations_grow_with_the_batch() -> None:
    small, big = (estimate(build_trial("conv_tau", "small", train_overrides={"batch_size": b, "device": "cpu"}))
                  for b in (2, 8))
    assert small.activation_bytes and big.activation_bytes
    assert 3.5 < big.activation_bytes / small.activation_bytes < 4.5
    assert big.params == small.params


def test_the_largest_config_of_the_default_space_fits_and_a_billion_hidden_units_do_not() -> None:
    space = load_space(REPO / "search_spaces" / "default.yaml")
    for model in space.models:
        section = space.sections[model]
        params = {"model": model, **{n: p.max_value for n, p in space.shared.items()},
                  **{f"{model}.{n}": p.max_value for n, p in {**section.model_params, **section.train_params}.items()}}
        assert does_not_fit(space.trial_config(params, {"device": "cpu"}), cpus=1) is None, model
    huge = build_trial("simple_lstm", "small", model_overrides={"hidden": 801_808}, train_overrides={"device": "cpu"})
    why = does_not_fit(huge, cpus=1)
    assert why is not None and "simple_lstm needs about" in why and "GiB a trial has" in why


def test_train_refuses_a_config_that_cannot_fit_in_one_line(tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "mmtune", "train", "--model", "simple_lstm", "--preset", "small",
                        "--set", "hidden=801808", "--epochs", "1", "--train-size", "16", "--val-size", "8",
                        "--test-size", "8", "--device", "cpu", "--out", str(out)],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs about" in lines[0] and "use a smaller model or batch size" in lines[0], r.stderr
    assert "Traceback" not in r.stderr and not out.exists()
