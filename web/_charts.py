"""Line charts as server-rendered SVG: no script, nothing fetched, readable without sight (a title and
a description state the figures the line shows)."""

from __future__ import annotations

import math
from typing import Sequence

from markupsafe import Markup, escape

__all__ = ["line_chart", "nice_ceiling"]

WIDTH, HEIGHT = 640, 180
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 12, 12, 28


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 × 10^n at or above ``value`` (at least 1): a readable axis top."""
    if value <= 1:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 2.5, 5, 10) if step * power >= value)


def _figure(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 or value == 0 else f"{value:,.1f}" if value >= 10 else f"{value:,.2f}"


def line_chart(chart_id: str, title: str, unit: str, points: Sequence[tuple[float, float]], *,
               window: float = 3600.0) -> Markup:
    """An SVG line of ``points`` (``(age in seconds, value)``, oldest first) over the last ``window``
    seconds, now at the right; labelled by ``title`` and a description of the latest and peak values."""
    plot_w, plot_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM
    top = nice_ceiling(max((v for _, v in points), default=0.0))

    def x(age: float) -> float:
        return _LEFT + plot_w * (1 - min(max(age, 0.0), window) / window)

    def y(value: float) -> float:
        return _TOP + plot_h * (1 - value / top)

    if points:
        latest, peak = points[-1][1], max(v for _, v in points)
        described = f"Now {_figure(latest)} {unit}; peak {_figure(peak)} {unit} over the last {window / 60:.0f} minutes."
    else:
        described = "No samples yet."
    parts = [
        f'<svg id="{escape(chart_id)}" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="{escape(chart_id)}-title {escape(chart_id)}-desc" data-points="{len(points)}">',
        f'<title id="{escape(chart_id)}-title">{escape(title)}</title>',
        f'<desc id="{escape(chart_id)}-desc">{escape(described)}</desc>',
    ]
    for fraction in (0.0, 0.5, 1.0):
        level = _TOP + plot_h * (1 - fraction)
        parts.append(f'<line class="grid" x1="{_LEFT}" y1="{level:.1f}" x2="{WIDTH - _RIGHT}" y2="{level:.1f}"/>')
        parts.append(f'<text class="axis" x="{_LEFT - 6}" y="{level + 4:.1f}" text-anchor="end">'
                     f'{escape(_figure(top * fraction))}</text>')
    for age, label in ((window, f"−{window / 60:.0f} min"), (window / 2, f"−{window / 120:.0f} min"), (0, "now")):
        anchor = "start" if age == window else "end" if age == 0 else "middle"
        parts.append(f'<text class="axis" x="{x(age):.1f}" y="{HEIGHT - 8}" text-anchor="{anchor}">{label}</text>')
    if points:
        line = " ".join(f"{x(age):.1f},{y(value):.1f}" for age, value in points)
        base = _TOP + plot_h
        parts.append(f'<polygon class="area" points="{x(points[0][0]):.1f},{base:.1f} {line} '
                     f'{x(points[-1][0]):.1f},{base:.1f}"/>')
        parts.append(f'<polyline class="line" points="{line}"/>')
    parts.append("</svg>")
    return Markup("".join(parts))
