"""`run_search.py` / `mmtune search`: every default named in --help; bad input is one line and exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run(*args: str, cwd: Path = REPO, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "run_search.py"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def test_help_names_every_default() -> None:
    out = _run("--help").stdout
    for flag in ("--space", "--samples", "--scheduler", "--sampler", "--max-epochs", "--grace-period",
                 "--reduction-factor", "--cpus-per-trial", "--gpus-per-trial", "--address", "--storage",
                 "--name", "--resume", "--seed"):
        assert flag in out
    for default in ("default search_spaces/default.yaml", "default asha", "default tpe", "default 1)",
                    "default 0", "default ./experiments", "default sweep-YYYYmmdd-HHMMSS-xxxx"):
        assert default in out, default


def test_mmtune_search_is_the_same_entry() -> None:
    out = subprocess.run([sys.executable, "-m", "mmtune.cli", "search", "--help"], cwd=REPO,
                         capture_output=True, text=True, timeout=120).stdout
    assert "--reduction-factor" in out and "default ./experiments" in out


BAD = [
    (["--samples", "many"], "invalid int value"),
    (["--scheduler", "hyperband"], "invalid choice"),
    (["--sampler", "grid"], "invalid choice"),
    (["--bogus"], "unrecognized arguments"),
    (["--space", "nope.yaml"], "does not exist"),
    (["--space", "search_spaces/smoke.yaml", "--samples", "0"], "--samples must be a positive integer"),
    (["--space", "search_spaces/smoke.yaml", "--grace-period", "5"], "exceeds --max-epochs"),
    (["--space", "search_spaces/smoke.yaml", "--reduction-factor", "1"], "--reduction-factor must be"),
    (["--resume", "--name", "never-ran"], "no resumable experiment 'never-ran'"),
    (["--resume"], "--resume needs --name"),
    (["--storage", "/proc/mmtune-nope"], "not writable"),
    (["--space", "search_spaces/smoke.yaml", "--address", "127.0.0.1:1"], "no Ray head reachable"),
    (["--space", "search_spaces/smoke.yaml", "--address", "nohostport"], "must be auto or HOST:PORT"),
    (["--name", "a/b"], "--name must be a plain folder name"),
]


@pytest.mark.parametrize("args,expected", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_flags_are_one_line_exit_2(tmp_path: Path, args: list[str], expected: str) -> None:
    if "--storage" not in args:
        args = [*args, "--storage", str(tmp_path / "exp")]
    proc = _run(*args)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert expected in lines[0]
    assert not (tmp_path / "exp" / "never-ran").exists()


def test_existing_experiment_is_not_overwritten(tmp_path: Path) -> None:
    exp = tmp_path / "exp" / "taken"
    exp.mkdir(parents=True)
    (exp / "results.parquet").write_bytes(b"precious")
    proc = _run("--space", "search_spaces/smoke.yaml", "--storage", str(tmp_path / "exp"), "--name", "taken")
    assert proc.returncode == 2 and "already exists" in proc.stderr
    assert (exp / "results.parquet").read_bytes() == b"precious"
