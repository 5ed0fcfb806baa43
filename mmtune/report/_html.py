"""HTML building blocks of the report: escaped tables, number formatting, inline figures and images."""

from __future__ import annotations

import base64
import html
import json
import math
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 0 auto; max-width: 1300px;
       padding: 0 24px 48px; color: #222; line-height: 1.4; }
h1 { margin-top: 24px; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 4px; margin-top: 40px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.tested td { background: #eef6ff; }
.banner { padding: 10px 14px; border-radius: 4px; margin: 12px 0; font-weight: 600; }
.banner.warn { background: #fff4d6; border: 1px solid #e6c15c; } .banner.ok { background: #e7f6e7; border: 1px solid #8c8; }
.note { color: #555; font-size: 13px; margin: 4px 0; } ul.notes li { color: #8a5a00; font-size: 13px; }
.units { background: #f7f7fb; border-left: 4px solid #88a; padding: 8px 12px; font-size: 13px; }
pre { background: #f7f7f7; padding: 6px; font-size: 12px; max-width: 600px; overflow-x: auto; margin: 4px 0; }
details summary { cursor: pointer; color: #1f4f9f; }
.frames { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
.frames figure { margin: 0; } figcaption { font-size: 12px; color: #555; }
img { image-rendering: pixelated; }
"""


def esc(x: Any) -> str:
    """Escaped text of any value."""
    return html.escape(str(x))


def fmt(x: Any, digits: int = 2) -> str:
    """A number with `digits` decimals, or an em dash for None/NaN/non-numbers."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "—" if x is None else esc(x)
    return "—" if not math.isfinite(v) else f"{v:,.{digits}f}"


def table(header: list[str] | str, rows: list[list[str]], row_classes: list[str] | None = None) -> str:
    """A table whose cells are already-escaped HTML (`header` may be ready-made <tr> rows)."""
    head = header if isinstance(header, str) else "<tr>" + "".join(f"<th>{h}</th>" for h in header) + "</tr>"
    body = []
    for i, r in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(c if c.startswith("<td") else f"<td>{c}</td>" for c in r) + "</tr>")
    return f"<table><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>"


def num(x: Any, digits: int = 2) -> str:
    """A right-aligned number cell."""
    return f'<td class="num">{fmt(x, digits)}</td>'


def details(summary: str, obj: Any) -> str:
    """A collapsible JSON dump of `obj`."""
    text = json.dumps(obj, indent=1, sort_keys=True, default=str)
    return f"<details><summary>{esc(summary)}</summary><pre>{esc(text)}</pre></details>"


def notes_list(notes: list[str]) -> str:
    """Notes as a list (empty string for none)."""
    if not notes:
        return ""
    return '<ul class="notes">' + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>"


def figure_div(fig: go.Figure, div_id: str) -> str:
    """The figure as a div + script; plotly.js itself is in the page head, once."""
    return pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=div_id,
                       config={"displaylogo": False, "responsive": True})


def img(data: bytes, mime: str, alt: str, width: int | None = None) -> str:
    """An inline base64 image."""
    w = f' width="{width}"' if width else ""
    return f'<img alt="{esc(alt)}"{w} src="data:{mime};base64,{base64.b64encode(data).decode("ascii")}">'


def page(title: str, body: str) -> str:
    """The whole self-contained document, with plotly.js embedded once in the head."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{esc(title)}</title>\n<style>{_CSS}</style>\n"
        "<script type=\"text/javascript\">window.PlotlyConfig = {MathJaxConfig: 'local'};</script>\n"
        f"<script type=\"text/javascript\">{get_plotlyjs()}</script>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )
