"""The sweep report: one self-contained HTML page built from an experiment directory."""

from __future__ import annotations

from mmtune.report.build import build_report, default_out

__all__ = ["build_report", "default_out"]
