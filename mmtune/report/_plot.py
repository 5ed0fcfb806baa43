"""Plot helpers shared by the report's figures: the empty figure with a note, one colour per model."""

from __future__ import annotations

import plotly.graph_objects as go

_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")


def model_colors(models: list[str]) -> dict[str, str]:
    """A fixed colour per model, in the order given (the same in every figure)."""
    return {m: _PALETTE[i % len(_PALETTE)] for i, m in enumerate(models)}


def run_colors(n: int) -> list[str]:
    """`n` colours in a fixed order, one per run drawn side by side."""
    return [_PALETTE[i % len(_PALETTE)] for i in range(n)]


def empty_figure(title: str, note: str, height: int = 260) -> go.Figure:
    """A figure with no data and `note` written in its middle (what an empty record draws)."""
    fig = go.Figure()
    fig.add_annotation(text=note, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font=dict(size=14, color="#666"))
    fig.update_layout(title=title, height=height, xaxis=dict(visible=False), yaxis=dict(visible=False))
    return fig
