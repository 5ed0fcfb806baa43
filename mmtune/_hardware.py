"""What machine this is: the one probe that the sweep, training runs and the bench record."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("torch", "numpy", "ray", "optuna")  # versions worth a line in every record


def cores() -> int:
    """CPUs this process may run on (its affinity), else the machine's count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict[str, Any]:
    """Python and the installed versions of PACKAGES (None when absent), read without importing them."""
    out: dict[str, Any] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def machine() -> dict[str, Any]:
    """CPU, cores, memory, GPU (None, or name / count / memory / capability), platform and versions."""
    import torch

    gpu = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        gpu = {"name": props.name, "count": torch.cuda.device_count(),
               "memory_gb": round(props.total_memory / 1e9, 1), "capability": f"{props.major}.{props.minor}"}
    try:
        mem_gb: float | None = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1)
    except (ValueError, OSError):
        mem_gb = None
    return {
        "cpu": cpu_name(), "cores": cores(), "logical_cpus": os.cpu_count(), "memory_gb": mem_gb, "gpu": gpu,
        "platform": platform.platform(),
        "versions": {**versions(), "torch": torch.__version__, "cuda": torch.version.cuda,
                     "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None},
    }


def gpu_name(hardware: dict[str, Any]) -> str | None:
    """The GPU's name in a `machine()` record (None on a CPU machine)."""
    gpu = hardware.get("gpu")
    return str(gpu.get("name")) if isinstance(gpu, dict) else None
