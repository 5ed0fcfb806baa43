"""The sweep report: one self-contained HTML page, plus the predicted-frame strips training writes."""

from __future__ import annotations

from mmtune.report.build import build_report, default_out
from mmtune.report.strips import save_strip, strip_array, strip_png_bytes

__all__ = ["build_report", "default_out", "save_strip", "strip_array", "strip_png_bytes"]
