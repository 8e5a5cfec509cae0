"""Charts drawn on the server as inline SVG: no script, no library, nothing fetched.

Every mark carries a <title> (the browser shows it on hover) and the figures have
text alternatives, so the numbers are readable without the picture too.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from html import escape

from markupsafe import Markup

INK, MUTED, BAR, GRID = "#1b2330", "#5b6677", "#b3261e", "#e3e8ef"


def _time(stamp: float, with_date: bool) -> str:
    moment = datetime.fromtimestamp(stamp, UTC)
    return moment.strftime("%m-%d %H:%M" if with_date else "%H:%M")


def time_bars(points: list[tuple[float, int]], label: str, *, width: int = 960, height: int = 170) -> Markup:
    """Denied packets per time slice as bars; x: UTC time, y: count."""
    left, bottom, top = 48, 22, 10
    inner_w, inner_h = width - left - 8, height - bottom - top
    peak = max((n for _, n in points), default=0)
    scale = max(1, peak)
    step = inner_w / max(1, len(points))
    slice_seconds = (points[1][0] - points[0][0]) if len(points) > 1 else 60.0
    end = points[-1][0] + slice_seconds if points else 0.0
    with_date = points and end - points[0][0] >= 12 * 3600
    parts = [f'<svg class="chart" role="img" aria-label="{escape(label)}" viewBox="0 0 {width} {height}" width="100%" preserveAspectRatio="none">',
             f"<title>{escape(label)}</title>"]
    for value in sorted({0, scale // 2, scale}) if scale >= 4 else (0, scale):  # whole numbers only
        y = top + inner_h * (1 - value / scale)
        parts.append(f'<line x1="{left}" x2="{width - 8}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" fill="{MUTED}">{value}</text>')
    for i, (stamp, count) in enumerate(points):
        h = inner_h * count / scale
        x = left + i * step
        parts.append(f'<rect x="{x + 0.5:.1f}" y="{top + inner_h - h:.1f}" width="{max(1.0, step - 1):.1f}" height="{h:.1f}" fill="{BAR}">'
                     f"<title>{_time(stamp, True)} UTC: {count}</title></rect>")
    ticks = [(0, points[0][0], "start"), (len(points) // 2, points[len(points) // 2][0], "middle"), (len(points), end, "end")] if points else []
    for i, stamp, anchor in ticks:  # the start, the middle and the end (now) of the period
        parts.append(f'<text x="{left + i * step:.1f}" y="{height - 6}" text-anchor="{anchor}" font-size="11" fill="{MUTED}">{_time(stamp, bool(with_date))}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def top_bars(items: list[tuple[str, int]], label: str, *, link: str | None = None, width: int = 440) -> Markup:
    """Horizontal bars, largest first; `link` % value makes each label a link."""
    row, label_w = 22, 170
    height = max(row, row * len(items)) + 4
    peak = max((n for _, n in items), default=1) or 1
    parts = [f'<svg class="chart" role="img" aria-label="{escape(label)}" viewBox="0 0 {width} {height}" width="{width}" height="{height}">',
             f"<title>{escape(label)}</title>"]
    if not items:
        parts.append(f'<text x="0" y="15" font-size="13" fill="{MUTED}">none</text>')
    for i, (value, count) in enumerate(items):
        y = i * row + 2
        shown = value if len(value) <= 24 else value[:23] + "…"
        text = f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end" font-size="12" fill="{INK}">{escape(shown)}</text>'
        if link:
            text = f'<a href="{escape(link % value, quote=True)}">{text}</a>'
        w = (width - label_w - 60) * count / peak
        parts += [text, f'<rect x="{label_w}" y="{y + 3}" width="{max(1.0, w):.1f}" height="{row - 8}" fill="{BAR}" rx="2"><title>{escape(value)}: {count}</title></rect>',
                  f'<text x="{label_w + w + 6:.1f}" y="{y + 15}" font-size="12" fill="{MUTED}">{count}</text>']
    parts.append("</svg>")
    return Markup("".join(parts))


def zone_graph(zones: list[str], flows: dict[tuple[str, str], list[str]], *, size: int = 760, members: dict[str, int] | None = None) -> Markup:
    """Zones on a circle (and `outside` in the middle); an arrow from zone A to zone B
    when A reaches B, thicker with more services; hover names them."""
    members = members or {}
    n = max(1, len(zones))
    center = size / 2
    radius = size / 2 - (130 if n > 12 else 90)
    node_r = 9 if n > 24 else 14
    where: dict[str, tuple[float, float]] = {"outside": (center, center)}
    for i, zone in enumerate(zones):
        angle = 2 * math.pi * i / n - math.pi / 2
        where[zone] = (center + radius * math.cos(angle), center + radius * math.sin(angle))
    edges = sum(1 for (a, b), s in flows.items() if a != b and s and a in where and b in where)
    dense = edges > 3 * n  # many flows: hairlines, each one shown when pointed at
    opacity, widest = (0.16, 1.2) if dense else (0.55, 6.0)
    parts = [f'<svg class="graph" role="img" aria-label="zones and the flows between them" viewBox="0 0 {size} {size}" width="{size}" height="{size}">',
             "<style>path.flow:hover,path.flow:focus{stroke:#b3261e;stroke-opacity:1;stroke-width:2.5}</style>",
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerUnits="userSpaceOnUse" markerWidth="8" markerHeight="8" orient="auto-start-reverse">'
             '<path d="M0,0 L10,5 L0,10 z" fill="#2f6fb3"/></marker></defs>']
    if dense:
        parts.append(f'<text x="{size / 2}" y="18" text-anchor="middle" font-size="12" fill="{MUTED}">{edges} flows between {n} zones: point at a line for its services</text>')
    marker = "" if dense else ' marker-end="url(#arrow)"'
    for (a, b), services in sorted(flows.items()):
        if a not in where or b not in where or a == b or not services:
            continue
        (x1, y1), (x2, y2) = where[a], where[b]
        dx, dy = x2 - x1, y2 - y1
        length = math.hypot(dx, dy) or 1
        # shorten to the circles, bend a little so A->B and B->A stay apart
        sx, sy = x1 + dx / length * node_r, y1 + dy / length * node_r
        ex, ey = x2 - dx / length * (node_r + 3), y2 - dy / length * (node_r + 3)
        mx, my = (sx + ex) / 2 - dy / length * length * 0.12, (sy + ey) / 2 + dx / length * length * 0.12
        stroke = min(widest, 0.7 + len(services) / 4)
        shown = ", ".join(services[:12]) + (f" (+{len(services) - 12})" if len(services) > 12 else "")
        parts.append(f'<path class="flow" data-from="{escape(a)}" data-to="{escape(b)}" d="M{sx:.1f},{sy:.1f} Q{mx:.1f},{my:.1f} {ex:.1f},{ey:.1f}" '
                     f'fill="none" stroke="#2f6fb3" stroke-opacity="{opacity}" stroke-width="{stroke:.1f}"{marker}>'
                     f"<title>{escape(a)} → {escape(b)}: {escape(shown)}</title></path>")
    for zone, (x, y) in where.items():
        if zone == "outside" and not any("outside" in key for key in flows):
            continue
        fill = "#f4a261" if zone == "outside" else "#16324f"
        angle = math.atan2(y - center, x - center)
        lx, ly = (x, y - node_r - 6) if zone == "outside" else (x + math.cos(angle) * (node_r + 6), y + math.sin(angle) * (node_r + 6))
        anchor = "middle" if zone == "outside" or abs(math.cos(angle)) < 0.3 else "start" if math.cos(angle) > 0 else "end"
        count = f" ({members[zone]} VMs)" if zone in members else ""
        target = "/ui/vms?zone=" + zone if zone != "outside" else "/ui/matrix"
        parts.append(f'<a href="{escape(target, quote=True)}"><circle class="zone" data-zone="{escape(zone)}" cx="{x:.1f}" cy="{y:.1f}" r="{node_r}" fill="{fill}">'
                     f"<title>{escape(zone)}{count}</title></circle>"
                     f'<text x="{lx:.1f}" y="{ly + 4:.1f}" text-anchor="{anchor}" font-size="{11 if n > 24 else 13}" fill="{INK}">{escape(zone)}</text></a>')
    parts.append("</svg>")
    return Markup("".join(parts))
