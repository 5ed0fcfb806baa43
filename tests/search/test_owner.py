"""One owner at a time for an experiment directory: the driver's owner.json, the workers' leases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from mmtune.errors import MMTuneError
from mmtune.search import owner


@pytest.fixture
def sleeper():
    """A live process of this host (a stand-in driver or worker), killed at the end."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc
    proc.kill()
    proc.wait()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write(path: Path, ident: owner.Ident) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(ident)))


def test_hold_writes_owner_with_a_heartbeat_and_removes_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(owner, "HEARTBEAT_S", 0.1)
    exp = tmp_path / "exp"
    with owner.hold(exp) as me:
        path = exp / owner.OWNER_FILE
        assert json.loads(path.read_text()) == asdict(me) and me.pid == os.getpid()
        os.utime(path, (0, 0))
        time.sleep(0.5)
        assert time.time() - path.stat().st_mtime < 5  # the heartbeat touched it again
        assert owner.owned_by(exp, me)
        assert owner.holders(exp) == [f"driver pid {me.pid} on {me.host}"]
    assert not path.exists() and owner.holders(exp) == []


def test_a_second_driver_is_refused_while_the_first_lives(tmp_path: Path, sleeper) -> None:
    _write(tmp_path / owner.OWNER_FILE, owner.me().__class__(owner.me().host, sleeper.pid, "t0"))
    with pytest.raises(MMTuneError, match=f"held by driver pid {sleeper.pid}"):
        with owner.hold(tmp_path):
            pass
    with pytest.raises(MMTuneError, match="after 0s; wait for it to end or kill it"):
        owner.wait_until_free(tmp_path, wait_s=0.3, say=lambda m: None)


def test_a_dead_driver_and_its_dead_workers_do_not_hold(tmp_path: Path) -> None:
    host = owner.me().host
    _write(tmp_path / owner.OWNER_FILE, owner.Ident(host, _dead_pid(), "t0"))
    _write(tmp_path / owner.WRITERS_DIR / "w.json", owner.Ident(host, _dead_pid(), "t0"))
    said: list[str] = []
    owner.wait_until_free(tmp_path, wait_s=5, say=said.append)
    assert said == [] and not (tmp_path / owner.WRITERS_DIR / "w.json").exists()  # a dead lease is cleared
    with owner.hold(tmp_path) as me:  # and a new driver takes over
        assert owner.owned_by(tmp_path, me)


def test_resume_waits_for_a_worker_that_ends(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5)"])
    _write(tmp_path / owner.WRITERS_DIR / "w.json", owner.Ident(owner.me().host, proc.pid, "t0"))
    said: list[str] = []
    t0 = time.time()
    owner.wait_until_free(tmp_path, wait_s=30, say=said.append)
    proc.wait()
    assert 1.0 < time.time() - t0 < 20
    assert len(said) == 1 and f"trial worker pid {proc.pid}" in said[0] and "waiting up to 30s" in said[0]


def test_a_worker_stops_owning_when_its_driver_dies_or_is_replaced(tmp_path: Path, sleeper) -> None:
    host = owner.me().host
    driver = owner.Ident(host, sleeper.pid, "t0")
    _write(tmp_path / owner.OWNER_FILE, driver)
    assert owner.owned_by(tmp_path, driver)
    assert not owner.owned_by(tmp_path, owner.Ident(host, sleeper.pid, "other"))  # a new driver took over
    sleeper.kill()
    sleeper.wait()
    assert not owner.owned_by(tmp_path, driver)  # killed: owner.json still names it, but the pid is gone


def test_on_another_host_a_stale_heartbeat_means_gone(tmp_path: Path) -> None:
    driver = owner.Ident("some-other-node", 1, "t0")
    path = tmp_path / owner.OWNER_FILE
    _write(path, driver)
    assert owner.owned_by(tmp_path, driver) and owner.holders(tmp_path)
    old = time.time() - owner.STALE_S - 5
    os.utime(path, (old, old))
    assert not owner.owned_by(tmp_path, driver) and owner.holders(tmp_path) == []


def test_a_worker_lease_lives_while_the_block_runs(tmp_path: Path) -> None:
    driver = owner.me("t0")
    with owner.lease(tmp_path, driver) as path:
        assert path.parent.name == owner.WRITERS_DIR and json.loads(path.read_text())["token"] == "t0"
        assert owner.holders(tmp_path) == [f"trial worker pid {os.getpid()} on {driver.host}"]
    assert not path.exists()
