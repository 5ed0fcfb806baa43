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
    out = " ".join(_run("--help").stdout.split())  # argparse wraps lines where it likes
    for flag in ("--space", "--samples", "--scheduler", "--sampler", "--max-epochs", "--grace-period",
                 "--reduction-factor", "--cpus-per-trial", "--gpus-per-trial", "--address", "--storage",
                 "--name", "--resume", "--seed", "--objective", "--time-budget", "--warm-start",
                 "--warm-start-top-k", "--final-share", "--no-search"):
        assert flag in out
    for default in ("default search_spaces/default.yaml", "default asha", "default tpe", "default 1)",
                    "default 0", "default ./experiments", "default sweep-YYYYmmdd-HHMMSS-xxxx", "default mse)",
                    "default: none, a cold start", "default 3)", "10m for the default space",
                    "0.6 for the default space", "the run a search has to beat (default off)"):
        assert default in out, default


def test_mmtune_search_is_the_same_entry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`mmtune search ARGS` and `python run_search.py ARGS` dispatch to the same sweep: each hands
    run_sweep the same SweepArgs and builds the report through the same after-sweep hook with the
    experiment the sweep wrote (the sweep itself is stubbed here), and each refuses the same bad input
    with the same one line and exit 2 (real processes)."""
    import runpy
    from types import SimpleNamespace

    import mmtune.cli.report
    import mmtune.search.sweep
    from mmtune.cli import main

    calls: list[tuple[str, object]] = []

    def sweep(args):
        calls.append(("sweep", args))
        return SimpleNamespace(status="completed", exp_dir=tmp_path / "exp")

    def after(ns):
        calls.append(("after", ns.space))
        return lambda exp_dir: calls.append(("report", exp_dir))

    monkeypatch.setattr(mmtune.search.sweep, "run_sweep", sweep)
    monkeypatch.setattr(mmtune.cli.report, "after_sweep", after)
    argv = ["--space", "search_spaces/smoke.yaml", "--samples", "3", "--seed", "7", "--storage", str(tmp_path)]
    assert main(["search", *argv]) == 0
    by_cli, calls[:] = list(calls), []
    monkeypatch.setattr(sys, "argv", ["run_search.py", *argv])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(REPO / "run_search.py"), run_name="__main__")
    assert done.value.code == 0
    assert [c[0] for c in by_cli] == ["after", "sweep", "report"] and calls == by_cli
    assert by_cli[1][1].samples == 3 and by_cli[1][1].seed == 7  # the flags reached the sweep

    bad = [*argv[:2], "--samples", "0", "--storage", str(tmp_path)]
    mmtune_cmd = subprocess.run([sys.executable, "-m", "mmtune", "search", *bad], cwd=REPO, capture_output=True,
                                text=True, timeout=120)
    script = _run(*bad)
    assert mmtune_cmd.returncode == script.returncode == 2
    assert mmtune_cmd.stderr.startswith("mmtune: error: ") and script.stderr.startswith("run_search.py: error: ")
    assert mmtune_cmd.stderr.removeprefix("mmtune: ") == script.stderr.removeprefix("run_search.py: ")
    assert len(script.stderr.strip().splitlines()) == 1 and "--samples must be a positive integer" in script.stderr


# (args, expected, whether the command gets as far as mmtune's own checks): those that do must not
# write anything into the storage, whatever the check that refuses them; argparse refuses the others
# before any of mmtune runs, and a storage of the case's own is not ours to watch.
BAD = [
    (["--samples", "many"], "invalid int value", False),
    (["--scheduler", "hyperband"], "invalid choice", False),
    (["--sampler", "grid"], "invalid choice", False),
    (["--bogus"], "unrecognized arguments", False),
    (["--space", "nope.yaml"], "does not exist", True),
    (["--space", "search_spaces/smoke.yaml", "--samples", "0"], "--samples must be a positive integer", True),
    (["--space", "search_spaces/smoke.yaml", "--grace-period", "5"], "exceeds --max-epochs", True),
    (["--space", "search_spaces/smoke.yaml", "--reduction-factor", "1"], "--reduction-factor must be", True),
    (["--resume", "--name", "never-ran"], "no resumable experiment 'never-ran'", True),
    (["--resume"], "--resume needs --name", True),
    (["--storage", "/proc/mmtune-nope"], "not writable", False),
    (["--space", "search_spaces/smoke.yaml", "--address", "127.0.0.1:1"], "no Ray head reachable", True),
    (["--space", "search_spaces/smoke.yaml", "--address", "nohostport"], "must be auto or HOST:PORT", True),
    (["--name", "a/b"], "--name must be a plain folder name", True),
    (["--space", "search_spaces/smoke.yaml", "--objective", "mse+flops"], "add --scheduler fifo", True),
    (["--objective", "speed"], "invalid choice", False),
    (["--space", "search_spaces/smoke.yaml", "--time-budget", "30"], "--time-budget must be a duration", True),
    (["--space", "search_spaces/smoke.yaml", "--time-budget", "0m"], "--time-budget must be more than 0", True),
    (["--space", "search_spaces/smoke.yaml", "--warm-start", "/nonexistent-exp"], "no results.parquet there", True),
    (["--space", "search_spaces/smoke.yaml", "--final-share", "0.5"], "--final-share needs a time budget", True),
    (["--space", "search_spaces/smoke.yaml", "--no-search"], "--no-search needs a time budget", True),
    (["--time-budget", "1m", "--final-share", "1"], "--final-share must be at least 0 and below 1", True),
    (["--time-budget", "1m", "--final-share", "-0.1"], "--final-share must be at least 0 and below 1", True),
    (["--time-budget", "1m", "--no-search", "--gpus-per-trial", "1"], "trains on the driver's CPUs", True),
    (["--space", "search_spaces/smoke.yaml", "--warm-start-top-k", "0"], "--warm-start-top-k must be", True),
]


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (None) under `root`."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("args,expected,watched", BAD, ids=[" ".join(a) for a, _, _ in BAD])
def test_bad_flags_are_one_line_exit_2(tmp_path: Path, args: list[str], expected: str, watched: bool) -> None:
    storage = tmp_path / "exp"
    earlier = storage / "earlier"  # an experiment that was there before
    earlier.mkdir(parents=True)
    (earlier / "sweep.json").write_text('{"schema": 1, "status": "completed"}\n')
    (earlier / "results.parquet").write_bytes(b"precious")
    if "--storage" not in args:
        args = [*args, "--storage", str(storage)]
    before = _tree(storage)
    proc = _run(*args)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert expected in lines[0]
    if watched:  # no experiment folder created, nothing of the earlier one changed
        assert _tree(storage) == before


def test_existing_experiment_is_not_overwritten(tmp_path: Path) -> None:
    exp = tmp_path / "exp" / "taken"
    exp.mkdir(parents=True)
    (exp / "results.parquet").write_bytes(b"precious")
    proc = _run("--space", "search_spaces/smoke.yaml", "--storage", str(tmp_path / "exp"), "--name", "taken")
    assert proc.returncode == 2 and "already exists" in proc.stderr
    assert (exp / "results.parquet").read_bytes() == b"precious"
