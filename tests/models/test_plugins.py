"""Models from other packages: entry points in the group `mmtune.models`, loaded once, lazily.

The `toy` plugin (tests/plugins/mmtune_toy_plugin) is installed by the dev install (Makefile),
so the parametrized model, training and bench tests run on it like on the built-in models.
"""

from __future__ import annotations

import importlib.metadata
import textwrap
from pathlib import Path

import pytest
from torch import nn

from mmtune.models import get_model, list_models, make_model_config, registry

BUILT_IN = {"simple_lstm", "conv_lstm", "conv_tau"}
INSTALL = "pip install -e tests/plugins/mmtune_toy_plugin (the Makefile's dev install does it)"


def test_the_toy_plugin_is_found_through_its_entry_point() -> None:
    eps = {ep.name: ep for ep in importlib.metadata.entry_points(group=registry.ENTRY_POINT_GROUP)}
    assert "toy" in eps, f"the toy plugin is not installed: {INSTALL}"
    assert eps["toy"].value == "mmtune_toy_plugin" and eps["toy"].dist.name == "mmtune-toy-plugin"
    assert "toy" in list_models() and BUILT_IN <= set(list_models())
    cfg = make_model_config("toy", preset="small", kernel_size=5)
    assert type(cfg).__module__ == "mmtune_toy_plugin" and (cfg.hidden, cfg.kernel_size) == (8, 5)
    assert get_model("toy", cfg).cfg is cfg


def _fake_distribution(root: Path, package: str, entry_points: str, modules: dict[str, str]):
    """An installed-looking distribution under `root` (dist-info + modules), found by importlib.metadata."""
    info = root / f"{package.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{registry.ENTRY_POINT_GROUP}]\n{entry_points}\n")
    for name, source in modules.items():
        (root / f"{name}.py").write_text(textwrap.dedent(source))
    (dist,) = importlib.metadata.distributions(path=[str(root)])
    return dist


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Install fake plugin distributions: `plugins(package, entry_points, modules)`; the registry is
    restored afterwards, and the plugins load afresh on the next `list_models()`."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    monkeypatch.syspath_prepend(str(tmp_path))
    found: list[importlib.metadata.EntryPoint] = []

    def entry_points(group: str):
        return [ep for ep in found if ep.group == group]

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)

    def add(package: str, entry_points: str, modules: dict[str, str]) -> None:
        dist = _fake_distribution(tmp_path / package, package, entry_points, modules)
        monkeypatch.syspath_prepend(str(tmp_path / package))
        found.extend(dist.entry_points)

    return add


_CALLABLE_PLUGIN = """
    from dataclasses import dataclass

    from torch import nn

    from mmtune.models import register_model


    @dataclass(frozen=True)
    class EchoConfig:
        in_channels: int = 1
        t_in: int = 10
        t_out: int = 10


    def register() -> None:
        register_model("echo", EchoConfig, presets={"small": {"model": {}, "train": {}}})(lambda cfg: nn.Identity())
"""


def test_a_broken_plugin_is_one_warning_and_the_others_keep_working(plugins, capsys) -> None:
    plugins("mmtune-broken-plugin", "broken = mmtune_broken_plugin",
            {"mmtune_broken_plugin": "raise RuntimeError('boom: the plugin is broken\\nsecond line')\n"})
    plugins("mmtune-echo-plugin", "echo = mmtune_echo_plugin:register", {"mmtune_echo_plugin": _CALLABLE_PLUGIN})
    names = list_models()
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # one line
    assert "'mmtune-broken-plugin'" in err and "RuntimeError: boom: the plugin is broken" in err
    assert BUILT_IN <= set(names) and "echo" in names  # a callable entry point registers when called
    assert isinstance(get_model("echo"), nn.Identity)
    assert isinstance(get_model("conv_lstm", make_model_config("conv_lstm", preset="small")), nn.Module)
    list_models()
    assert capsys.readouterr().err == ""  # loaded once: no second warning


def test_a_plugin_cannot_take_a_built_in_name(plugins, capsys) -> None:
    clash = _CALLABLE_PLUGIN.replace('register_model("echo"', 'register_model("conv_tau"')
    plugins("mmtune-clash-plugin", "clash = mmtune_clash_plugin:register", {"mmtune_clash_plugin": clash})
    assert "conv_tau" in list_models()
    err = capsys.readouterr().err
    assert "'mmtune-clash-plugin'" in err and "'conv_tau' is already registered" in err
    assert registry.get_entry("conv_tau").config_cls.__name__ == "ConvTAUConfig"


def test_plugins_load_lazily_not_at_import() -> None:
    import subprocess
    import sys

    code = ("import sys, mmtune.models as m; assert 'mmtune_toy_plugin' not in sys.modules; "
            "m.list_models(); assert 'mmtune_toy_plugin' in sys.modules")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
