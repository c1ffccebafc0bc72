#!/usr/bin/env python3
"""chart.py -- the ingest suite's figures as one SVG picture (Python 3 standard library only).

    python3 bench/chart.py [RESULTS.md [OUT.svg]]     (defaults: bench/RESULTS.md, bench/ingest.svg)

Reads the newest "suite" section of RESULTS.md (the table bench/ingest.sh appends) and
draws three panels: durable ingest msg/s against concurrent sessions with one message per
connection, the same with 100 messages per connection (5 KiB bodies over [::1]), and memory
per idle session (PSS, KiB, logarithmic axis) -- sendmail-rs against Postfix and sendmail
8.17. The numbers are printed on the picture, so it can be checked against the table.
"""

import html
import math
import re
import sys
from pathlib import Path

SERVERS = ["sendmail-rs", "Postfix", "sendmail 8.17"]
COLOURS = {"sendmail-rs": "#c0392b", "Postfix": "#2471a3", "sendmail 8.17": "#7d8c8d"}
W, H = 1060, 380
PANEL_W, PANEL_H, TOP, LEFT = 270, 240, 70, 70


def newest_suite(text):
    """(heading, rows) of the last section whose table has the suite's columns."""
    sections = re.split(r"^## ", text, flags=re.M)
    for sec in reversed(sections):
        rows = []
        for line in sec.splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) >= 7 and cells[0] in ("ingest", "idle", "relay", "local", "latency"):
                rows.append(cells)
        if any(r[0] == "ingest" for r in rows):
            return sec.splitlines()[0].strip(), rows
    raise SystemExit("chart.py: no suite table (| part | cell | unit | sendmail-rs | Postfix | sendmail 8.17 |)")


def number(cell):
    try:
        return float(cell)
    except ValueError:
        return None  # "-": not measured


def series(rows, per_conn):
    """{server: [(sessions, msg/s)]} for the plain 5 KiB [::1] ingest cells."""
    out = {s: [] for s in SERVERS}
    for r in rows:
        m = re.fullmatch(r"s=(\d+), (\d+)/conn", r[1])
        if r[0] != "ingest" or not m or int(m.group(2)) != per_conn:
            continue
        for i, s in enumerate(SERVERS):
            v = number(r[3 + i])
            if v is not None:
                out[s].append((int(m.group(1)), v))
    return out


def idle(rows):
    """[(label, {server: KiB})] for the idle rows."""
    out = []
    for r in rows:
        if r[0] == "idle":
            n = re.match(r"(\d+) sessions", r[1])
            label = f"{n.group(1)} sessions" if n else r[1]
            out.append((label, {s: number(r[3 + i]) for i, s in enumerate(SERVERS)}))
    return out


def nice_max(v):
    if v <= 0:
        return 1
    p = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if m * p >= v:
            return m * p
    return 10 * p


def text(x, y, s, size=11, anchor="middle", weight="normal", colour="#222"):
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
            f'font-weight="{weight}" fill="{colour}">{html.escape(str(s))}</text>')


def vtext(x, y, s):
    """An axis title, turned to read upwards."""
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="11" text-anchor="middle" fill="#222" '
            f'transform="rotate(-90 {x:.1f} {y:.1f})">{html.escape(s)}</text>')


def line_panel(x0, title, data):
    out = [text(x0 + PANEL_W / 2, TOP - 12, title, 13, weight="bold")]
    xs = sorted({x for pts in data.values() for x, _ in pts})
    ymax = nice_max(max((v for pts in data.values() for _, v in pts), default=1))
    y0 = TOP + PANEL_H
    out.append(f'<rect x="{x0}" y="{TOP}" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="#999"/>')
    for k in range(5):
        v = ymax * k / 4
        y = y0 - PANEL_H * k / 4
        out.append(f'<line x1="{x0}" x2="{x0 + PANEL_W}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
        out.append(text(x0 - 6, y + 4, f"{v:,.0f}", 10, "end"))
    px = {x: x0 + PANEL_W * (i + 0.5) / len(xs) for i, x in enumerate(xs)}
    for x in xs:
        out.append(text(px[x], y0 + 16, x, 11))
    out.append(text(x0 + PANEL_W / 2, y0 + 34, "concurrent sessions", 11))
    out.append(vtext(x0 - 50, TOP + PANEL_H / 2, "msg/s"))
    for s in SERVERS:
        pts = sorted(data[s])
        if not pts:
            continue
        coords = [(px[x], y0 - PANEL_H * v / ymax) for x, v in pts]
        path = " ".join(f"{'M' if i == 0 else 'L'}{cx:.1f},{cy:.1f}" for i, (cx, cy) in enumerate(coords))
        out.append(f'<path d="{path}" fill="none" stroke="{COLOURS[s]}" stroke-width="2.5"/>')
        for (cx, cy), (_, v) in zip(coords, pts):
            out.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="3.5" fill="{COLOURS[s]}"/>')
            out.append(text(cx, cy - 7, f"{v:,.0f}", 9, colour=COLOURS[s]))
    return out


def bar_panel(x0, title, groups):
    out = [text(x0 + PANEL_W / 2, TOP - 12, title, 13, weight="bold")]
    y0 = TOP + PANEL_H
    vals = [v for _, g in groups for v in g.values() if v]
    lo, hi = 1.0, 10 ** math.ceil(math.log10(max(vals, default=10)))
    scale = lambda v: PANEL_H * (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
    out.append(f'<rect x="{x0}" y="{TOP}" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="#999"/>')
    v = lo
    while v <= hi:
        y = y0 - scale(v)
        out.append(f'<line x1="{x0}" x2="{x0 + PANEL_W}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
        out.append(text(x0 - 6, y + 4, f"{v:,.0f}", 10, "end"))
        v *= 10
    out.append(vtext(x0 - 50, TOP + PANEL_H / 2, "KiB"))
    gw = PANEL_W / max(len(groups), 1)
    bw = gw / (len(SERVERS) + 1)
    for gi, (label, g) in enumerate(groups):
        gx = x0 + gi * gw
        out.append(text(gx + gw / 2, y0 + 16, label, 11))
        for si, s in enumerate(SERVERS):
            v = g.get(s)
            bx = gx + bw * (si + 0.5)
            if not v:
                out.append(text(bx + bw / 2, y0 - 4, "-", 10, colour=COLOURS[s]))
                continue
            h = scale(v)
            out.append(f'<rect x="{bx:.1f}" y="{y0 - h:.1f}" width="{bw * 0.9:.1f}" height="{h:.1f}" fill="{COLOURS[s]}"/>')
            out.append(text(bx + bw * 0.45, y0 - h - 4, f"{v:,.1f}", 9, colour=COLOURS[s]))
    out.append(text(x0 + PANEL_W / 2, y0 + 34, "PSS per session (banner + EHLO), log scale", 11))
    return out


def render(heading, rows):
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
             'font-family="DejaVu Sans, Helvetica, Arial, sans-serif">',
             f'<rect width="{W}" height="{H}" fill="white"/>',
             text(W / 2, 22, f"bench/ingest.sh — {heading}", 13, weight="bold")]
    parts += line_panel(LEFT + 10, "Durable ingest, 1 msg/connection", series(rows, 1))
    parts += line_panel(LEFT + 10 + PANEL_W + 75, "Durable ingest, 100 msg/connection", series(rows, 100))
    parts += bar_panel(LEFT + 10 + 2 * (PANEL_W + 75), "Memory per idle session", idle(rows))
    lx = LEFT + 10
    for s in SERVERS:
        parts.append(f'<rect x="{lx}" y="{H - 22}" width="14" height="10" fill="{COLOURS[s]}"/>')
        parts.append(text(lx + 20, H - 13, s, 11, "start"))
        lx += 130
    parts.append(text(W - 10, H - 13, "5 KiB bodies over [::1], median of the run's repetitions (RESULTS.md)", 10, "end", colour="#555"))
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main(argv):
    here = Path(__file__).resolve().parent
    src = Path(argv[1]) if len(argv) > 1 else here / "RESULTS.md"
    out = Path(argv[2]) if len(argv) > 2 else here / "ingest.svg"
    heading, rows = newest_suite(src.read_text(encoding="utf-8"))
    out.write_text(render(heading, rows), encoding="utf-8")
    print(f"{out}: {heading}")


if __name__ == "__main__":
    main(sys.argv)
