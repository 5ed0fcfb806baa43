"""One owner at a time for a sweep's experiment directory: its driver, and the trial workers it started.

A driver holds `owner.json` (its host, pid and a token) and touches it every `HEARTBEAT_S` while it
runs. Each trial worker keeps a lease in `.writers/` the same way, and before it writes a
checkpoint it checks that the driver that started it still owns the directory: a driver that was
killed (SIGKILL leaves no clean-up) no longer does, so its orphaned workers stop at their next epoch
end without writing. A `--resume` waits up to `WAIT_S` for an earlier driver or its workers to go,
saying so, and refuses in one line if they are still there.

Alive means: on this host, the pid exists; on another host (shared storage), the file was touched
within `STALE_S`.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path

from mmtune._io import write_json
from mmtune.errors import MMTuneError

OWNER_FILE = "owner.json"
WRITERS_DIR = ".writers"
HEARTBEAT_S = 2.0  # how often a driver and its workers touch their files
STALE_S = 30.0  # a file on another host untouched this long belongs to a process that is gone
WAIT_S = 90.0  # how long a --resume waits for an earlier driver's workers (they stop at an epoch end)


@dataclass(frozen=True)
class Ident:
    """Who holds a file: host, pid, and the driver's token (a worker carries its driver's)."""

    host: str
    pid: int
    token: str


def me(token: str | None = None) -> Ident:
    """This process, with `token` (a new one when None)."""
    return Ident(socket.gethostname(), os.getpid(), token or secrets.token_hex(8))


def _read(path: Path) -> Ident | None:
    try:
        return Ident(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _pid_alive(pid: int) -> bool:
    """Whether `pid` runs on this host (a zombie, ended but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with suppress(OSError, IndexError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _alive(ident: Ident, path: Path) -> bool:
    if ident.host == socket.gethostname():
        return _pid_alive(ident.pid)
    try:
        return time.time() - path.stat().st_mtime < STALE_S
    except OSError:
        return False


def holders(exp_dir: Path) -> list[str]:
    """The live processes that hold `exp_dir`: its driver and trial workers, one phrase each."""
    found = []
    owner = exp_dir / OWNER_FILE
    if (ident := _read(owner)) is not None and _alive(ident, owner):
        found.append(f"driver pid {ident.pid} on {ident.host}")
    for lease in sorted((exp_dir / WRITERS_DIR).glob("*.json")):
        if (ident := _read(lease)) is not None and _alive(ident, lease):
            found.append(f"trial worker pid {ident.pid} on {ident.host}")
        else:
            with suppress(OSError):
                lease.unlink()  # a worker that is gone: its lease goes too
    return found


def wait_until_free(exp_dir: Path, wait_s: float = WAIT_S, say: Callable[[str], None] = print) -> None:
    """Return once no other process holds `exp_dir`, waiting up to `wait_s` (and saying so).

    Raises:
        MMTuneError: a driver or its workers still hold it after `wait_s`.
    """
    busy = holders(exp_dir)
    if not busy:
        return
    say(f"mmtune search: {exp_dir} is still held by {', '.join(busy)}; waiting up to {wait_s:.0f}s for it "
        f"(an earlier driver's workers stop at their next epoch end)")
    end = time.time() + wait_s
    while busy and time.time() < end:
        time.sleep(min(HEARTBEAT_S, max(0.1, end - time.time())))
        busy = holders(exp_dir)
    if busy:
        raise MMTuneError(f"experiment {exp_dir} is still held by {', '.join(busy)} after {wait_s:.0f}s; "
                          f"wait for it to end or kill it, then run --resume again")


class _Beat:
    """A daemon thread that touches `path` every HEARTBEAT_S until stopped."""

    def __init__(self, path: Path) -> None:
        self.path, self._stop = path, threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"mmtune-heartbeat-{path.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with suppress(OSError):
                os.utime(self.path)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=HEARTBEAT_S + 1)


@contextmanager
def _kept(path: Path, ident: Ident) -> Iterator[None]:
    """`ident` written to `path` and touched every HEARTBEAT_S while the block runs; removed after
    it, unless another process has written its own there since."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(asdict(ident), path)
    beat = _Beat(path)
    try:
        yield
    finally:
        beat.stop()
        if _read(path) == ident:
            with suppress(OSError):
                path.unlink()


@contextmanager
def hold(exp_dir: Path) -> Iterator[Ident]:
    """Own `exp_dir` while the block runs (owner.json, with a heartbeat); yields this driver's Ident.

    Raises:
        MMTuneError: another live driver or worker holds it (checked again, after `wait_until_free`).
    """
    if busy := holders(exp_dir):
        raise MMTuneError(f"experiment {exp_dir} is held by {', '.join(busy)}; wait for it to end or kill it")
    ident = me()
    with _kept(exp_dir / OWNER_FILE, ident):
        yield ident


def owned_by(exp_dir: Path, driver: Ident) -> bool:
    """Whether `driver` still owns `exp_dir`: a worker asks before it writes.

    On the driver's host its pid must be alive and owner.json must still name it; on another host,
    owner.json must name it and be fresh. When owner.json cannot be seen at all from here (storage
    that is not shared), the worker cannot tell and carries on.
    """
    path, here = exp_dir / OWNER_FILE, driver.host == socket.gethostname()
    if here and not _pid_alive(driver.pid):
        return False
    current = _read(path)  # None also when exp_dir cannot be seen from here
    if current is None:
        return not here
    return current.token == driver.token and (here or _alive(current, path))


@contextmanager
def lease(exp_dir: Path, driver: Ident) -> Iterator[Path]:
    """A trial worker's lease in `exp_dir/.writers/` while the block runs; yields its path."""
    ident = me(driver.token)
    path = exp_dir / WRITERS_DIR / f"{ident.host}-{ident.pid}.json"
    with _kept(path, ident):
        yield path
