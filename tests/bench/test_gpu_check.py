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


def test_python_dash_m_mmtune_is_the_cli() -> None:
    """The GPU machine runs `python -m mmtune` from PYTHONPATH: the same parser as the console script."""
    def help_of(cmd: list[str]) -> str:
        out = subprocess.run([*cmd, "bench", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stdout.replace("__main__.py", "mmtune")

    dash_m = help_of([sys.executable, "-m", "mmtune"])
    assert dash_m == help_of([str(Path(sys.executable).with_name("mmtune"))]) and "--pack-seconds" in dash_m


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
        "gpu_check.sh: unknown step 'fly' in --only; use test, diag, train, bench, sweep"]


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_the_full_check_refuses_before_writing(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    res = _check(out=str(dest))
    assert res.returncode == 2 and "torch sees no CUDA device here" in res.stderr
    assert not dest.exists()

