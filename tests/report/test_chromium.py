"""The report in real headless Chromium: no console errors, every plot rendered, a screenshot kept."""

from __future__ import annotations

from mmtune.report import build_report


def test_report_renders_in_chromium(make_exp, render):
    report = build_report(make_exp())
    page = render(report, "synthetic")
    assert page.console_errors == []
    plots = page.plots()
    assert len(plots) == report.read_text().count("Plotly.newPlot") == 12
    assert all(plots.values()), f"plots without an svg: {[k for k, ok in plots.items() if not ok]}"
    assert page.screenshot.stat().st_size > 10_000


def test_running_partial_report_renders_in_chromium(make_exp, render):
    report = build_report(make_exp(status="running", missing=("test_metrics.json", "predictions", "study.db")))
    page = render(report, "synthetic-partial")
    assert page.console_errors == []
    assert all(page.plots().values())


def test_console_errors_are_caught(make_exp, render, tmp_path):
    """The check itself: a page that throws is reported."""
    report = build_report(make_exp(), tmp_path / "broken.html")
    report.write_text(report.read_text().replace("</body>", "<script>null.boom();</script></body>"))
    assert any("Uncaught" in e for e in render(report, "broken").console_errors)
