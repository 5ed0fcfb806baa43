"""Shared bits of the sweep tests: a tiny search space that runs in seconds per trial on CPU."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

RAY = str(Path(sys.executable).with_name("ray"))


class RayNodes:
    """Loopback Ray nodes for the cluster tests, each `ray start --block` in its own process group.

    --block keeps `ray start` in the foreground with the node's processes in its own process group,
    so a test can stop (or kill -9) exactly one node; `ray stop` would stop every Ray on the machine.
    """

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    @staticmethod
    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def start(self, args: list[str], log: Path) -> subprocess.Popen:
        return subprocess.Popen([RAY, "start", "--block", "--disable-usage-stats", *args], stdout=open(log, "w"),
                                stderr=subprocess.STDOUT, start_new_session=True, env=self.env)


@pytest.fixture
def ray_nodes() -> type[RayNodes]:
    """The RayNodes class: `ray_nodes(env).start([...], log)`."""
    return RayNodes

TINY = """
# The smallest sweep that still means something: two models, 3 epochs, a few clips.
model: {choices: [simple_lstm, conv_tau]}
shared:
  lr: {type: float, low: 1.0e-4, high: 3.0e-2, log: true}
  batch_size: 16
  epochs: 3
models:
  simple_lstm:
    preset: small
    hidden: {type: categorical, choices: [32, 64]}
  conv_tau:
    preset: small
    hid_S: 8
    hid_T: 16
    N_T: {type: int, low: 1, high: 2}
data: {train_size: 16, val_size: 8, test_size: 8}
"""


@pytest.fixture
def tiny_space(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path
