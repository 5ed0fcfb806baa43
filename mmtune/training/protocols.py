"""Named training protocols: a data budget and a schedule that a published table was made with.

A protocol fixes what a comparison needs to be fair (clips per split, epochs, batch size) and
nothing else; any explicit flag still overrides it, and every run records the protocol it followed.

Example:
    >>> get_protocol("reference").data["train_size"]
    8000
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mmtune.errors import MMTuneError

__all__ = ["PROTOCOLS", "Protocol", "get_protocol", "protocol_record"]


@dataclass(frozen=True)
class Protocol:
    """A named budget: DataConfig and TrainConfig values, and where they come from."""

    name: str
    source: str
    data: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)


PROTOCOLS: dict[str, Protocol] = {
    "reference": Protocol(
        "reference",
        "Colonna & Manganaro 2023, 'Video Prediction on Moving MNIST': 8,000 train / 1,000 val / 1,000 test "
        "clips, 5 epochs, batch 16 (SimpleLSTM 2478, ConvLSTM 1927, ConvTAU 1647, ConvTAU+flow 1520 "
        "per-pixel 0-255 MSE)",
        data={"train_size": 8000, "val_size": 1000, "test_size": 1000},
        train={"epochs": 5, "batch_size": 16},
    ),
}


def get_protocol(name: str) -> Protocol:
    """The protocol `name`, or an MMTuneError naming the known ones."""
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise MMTuneError(f"unknown protocol {name!r}; expected one of {sorted(PROTOCOLS)}") from None


def protocol_record(name: str | None, data: Any, overridden: list[str]) -> dict[str, Any] | None:
    """What a run writes about the protocol it followed (None without one).

    Args:
        name: the protocol's name, or None.
        data: the run's DataConfig (for where its test clips come from).
        overridden: the protocol's fields that an explicit flag changed.
    """
    if name is None:
        return None
    p = get_protocol(name)
    if getattr(data, "path", None) or getattr(data, "test", None):  # an array file (ArrayDataConfig)
        test = f"the array file {data.test if data.test and not data.path else data.path}"
    elif data.test_file:
        test = f"the standard file {data.test_file}"
    else:
        test = f"generated from held-out {data.digits} digits (not the standard mnist_test_seq.npy)"
    return {"name": p.name, "source": p.source, "data": dict(p.data), "train": dict(p.train),
            "overridden_by_flags": sorted(overridden), "test_clips": test}
