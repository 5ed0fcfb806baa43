"""scripts/gpu_check.sh refuses bad input before it writes anything; `python -m mmtune` is the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "gpu_check.sh"


def _check(*args: str, out: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    if out is not None:
        env["OUT"] = out
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=env)


def test_python_dash_m_mmtune_is_the_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU machine runs `python -m mmtune` from PYTHONPATH; it must be the console script's
    command: the installed `mmtune` entry point is mmtune.cli:main, `python -m mmtune` calls that
    same function with the command line and exits with what it returns, and the two real commands
    refuse the same bad input with the same line and exit 2."""
    import runpy
    from importlib.metadata import entry_points

    import mmtune.cli

    (ep,) = entry_points(group="console_scripts", name="mmtune")
    assert ep.value == "mmtune.cli:main" and ep.load() is mmtune.cli.main
    seen = []
    monkeypatch.setattr(mmtune.cli, "main", lambda argv=None: seen.append((argv, sys.argv[1:])) or 7)
    monkeypatch.setattr(sys, "argv", ["mmtune", "bench", "--tiny"])
    with pytest.raises(SystemExit) as done:
        runpy.run_module("mmtune", run_name="__main__")
    assert done.value.code == 7 and seen == [(None, ["bench", "--tiny"])]

    def run(cmd: list[str]) -> tuple[int, str]:
        out = subprocess.run([*cmd, "bench", "--steps", "0"], cwd=REPO, capture_output=True, text=True, timeout=120)
        return out.returncode, out.stderr

    dash_m = run([sys.executable, "-m", "mmtune"])
    assert dash_m == run([str(Path(sys.executable).with_name("mmtune"))])
    assert dash_m[0] == 2 and dash_m[1].startswith("mmtune: error: steps must be a positive integer")


def test_no_output_folder_is_one_line_and_exit_2() -> None:
    res = _check()
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "gpu_check.sh: no output folder: pass DIR, or set OUT (the device tool sets it)"]


def test_a_non_empty_folder_is_refused_and_left_alone(tmp_path: Path) -> None:
    (tmp_path / "summary.txt").write_text("an earlier check\n")
    res = _check("--tiny", str(tmp_path))
    assert res.returncode == 2 and "is not empty" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.txt"]
    assert (tmp_path / "summary.txt").read_text() == "an earlier check\n"


def test_an_unknown_step_is_one_line_and_exit_2(tmp_path: Path) -> None:
    res = _check("--tiny", "--only", "test,fly", str(tmp_path / "out"))
    assert res.returncode == 2 and not (tmp_path / "out").exists()
    assert res.stderr.strip().splitlines() == [
        "gpu_check.sh: unknown step 'fly' in --only; use test, diag, train, bench, decide, sweep"]


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_the_full_check_refuses_before_writing(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    res = _check(out=str(dest))
    assert res.returncode == 2 and "torch sees no CUDA device here" in res.stderr
    assert not dest.exists()

