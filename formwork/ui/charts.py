"""Small inline-SVG charts for dashboard widgets (no chart library): bars, lines and funnel rows.

Labels are escaped; numbers are formatted here, so the Markup returned is safe to print.
"""

from __future__ import annotations

import math
from typing import Any

from markupsafe import Markup

from formwork.ui.render import PALETTE_HEX, format_currency, format_number

WIDTH, HEIGHT, PAD_L, PAD_B, PAD_T = 560, 240, 56, 44, 16


def number_text(value: Any, fmt: str | None = None) -> str:
    if value is None:
        return "—"
    if fmt == "currency":
        return format_currency(value, "CNY", 0)
    if fmt == "percent":
        return format_number(float(value) * 100, 1) + "%"
    if isinstance(value, float) and not value.is_integer():
        return format_number(value, 2)
    return format_number(value, 0)


def _scale(values: list[float]) -> float:
    """A round top for the axis (1, 2, 2.5 or 5 × 10ⁿ, divisible in four) at or above the largest value."""
    top = max([float(v) for v in values if v is not None] or [0.0])
    if top <= 0:
        return 1
    mag = 10 ** math.floor(math.log10(top))
    for step in (1, 2, 2.5, 4, 5, 8, 10):
        if top <= step * mag:
            return step * mag
    return 10 * mag


def bar_chart(points: list[tuple[str, float | None]], fmt: str | None = None) -> Markup:
    if not points:
        return Markup("")
    top = _scale([v or 0 for _, v in points])
    inner_w = WIDTH - PAD_L - 8
    inner_h = HEIGHT - PAD_B - PAD_T
    step = inner_w / len(points)
    bw = max(4.0, min(48.0, step * 0.7))
    parts = [Markup('<svg class="chart" viewBox="0 0 {} {}" role="img">').format(WIDTH, HEIGHT)]
    for i in range(5):
        y = PAD_T + inner_h * i / 4
        parts.append(Markup('<line class="grid" x1="{}" x2="{}" y1="{:.1f}" y2="{:.1f}"/>'
                            '<text class="axis" x="{}" y="{:.1f}" text-anchor="end">{}</text>').format(
            PAD_L, WIDTH - 8, y, y, PAD_L - 6, y + 4, number_text(top * (4 - i) / 4, fmt)))
    for i, (label, value) in enumerate(points):
        v = value or 0
        h = inner_h * v / top
        x = PAD_L + step * i + (step - bw) / 2
        y = PAD_T + inner_h - h
        color = PALETTE_HEX[i % len(PALETTE_HEX)]
        parts.append(Markup('<g><title>{}: {}</title><rect x="{:.1f}" y="{:.1f}" width="{:.1f}" height="{:.1f}" '
                            'rx="3" fill="{}"/></g>').format(label, number_text(value, fmt), x, y, bw, h, color))
        parts.append(Markup('<text class="axis" x="{:.1f}" y="{}" text-anchor="middle">{}</text>').format(
            x + bw / 2, HEIGHT - PAD_B + 16, label[:10]))
    parts.append(Markup("</svg>"))
    return Markup("").join(parts)


def line_chart(points: list[tuple[str, float | None]], fmt: str | None = None) -> Markup:
    if not points:
        return Markup("")
    top = _scale([v or 0 for _, v in points])
    inner_w = WIDTH - PAD_L - 16
    inner_h = HEIGHT - PAD_B - PAD_T
    step = inner_w / max(1, len(points) - 1)
    coords = [(PAD_L + 8 + step * i, PAD_T + inner_h - inner_h * (v or 0) / top) for i, (_, v) in enumerate(points)]
    parts = [Markup('<svg class="chart" viewBox="0 0 {} {}" role="img">').format(WIDTH, HEIGHT)]
    for i in range(5):
        y = PAD_T + inner_h * i / 4
        parts.append(Markup('<line class="grid" x1="{}" x2="{}" y1="{:.1f}" y2="{:.1f}"/>'
                            '<text class="axis" x="{}" y="{:.1f}" text-anchor="end">{}</text>').format(
            PAD_L, WIDTH - 8, y, y, PAD_L - 6, y + 4, number_text(top * (4 - i) / 4, fmt)))
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    parts.append(Markup('<polyline class="line" points="{}"/>').format(path))
    every = max(1, len(points) // 8)
    for i, ((label, value), (x, y)) in enumerate(zip(points, coords, strict=True)):
        parts.append(Markup('<g><title>{}: {}</title><circle class="dot" cx="{:.1f}" cy="{:.1f}" r="3.5"/></g>')
                     .format(label, number_text(value, fmt), x, y))
        if i % every == 0:
            parts.append(Markup('<text class="axis" x="{:.1f}" y="{}" text-anchor="middle">{}</text>').format(
                x, HEIGHT - PAD_B + 16, label[:10]))
    parts.append(Markup("</svg>"))
    return Markup("").join(parts)


def funnel(points: list[tuple[str, float | None]], fmt: str | None = None) -> Markup:
    top = _scale([v or 0 for _, v in points])
    rows = []
    for i, (label, value) in enumerate(points):
        pct = 100 * (value or 0) / top
        rows.append(Markup('<div class="funnel-row"><span class="funnel-label">{}</span>'
                           '<span class="funnel-bar" style="width:{:.1f}%;background:{}"></span>'
                           '<span class="funnel-value">{}</span></div>').format(
            label, max(pct, 1.0), PALETTE_HEX[i % len(PALETTE_HEX)], number_text(value, fmt)))
    return Markup('<div class="funnel">{}</div>').format(Markup("").join(rows))
