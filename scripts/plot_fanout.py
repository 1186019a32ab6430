#!/usr/bin/env python3
"""Turns criterion's output for benches/fanout.rs into the tables and plots of BENCHMARKS.md.

Usage: python3 scripts/plot_fanout.py [target/criterion] [docs]

Reads target/criterion/fanout_<size>/<contender>/<N>/new/{estimates,benchmark}.json, prints a
markdown table per payload (median deliveries/s and the ratios wshub/baseline), and writes
docs/fanout_<size>.svg: deliveries/s against N (log-log), one line per contender.
No third-party packages: the SVG is written by hand.
"""

import json
import math
import os
import sys

CONTENDERS = [
    ("wshub", "#1f77b4"),
    ("wshub_owned", "#9467bd"),
    ("tokio_broadcast", "#ff7f0e"),
    ("rwlock_hashmap", "#2ca02c"),
]


def load(root):
    """{group: {contender: {n: deliveries_per_second}}} from criterion's median estimates."""
    data = {}
    for group in sorted(os.listdir(root)):
        if not group.startswith("fanout_"):
            continue
        for contender, _ in CONTENDERS:
            cdir = os.path.join(root, group, contender)
            if not os.path.isdir(cdir):
                continue
            for n in os.listdir(cdir):
                new = os.path.join(cdir, n, "new")
                try:
                    with open(os.path.join(new, "estimates.json")) as f:
                        median_ns = json.load(f)["median"]["point_estimate"]
                    with open(os.path.join(new, "benchmark.json")) as f:
                        elements = json.load(f)["throughput"]["Elements"]
                except (OSError, KeyError, ValueError):
                    continue
                rate = elements / (median_ns * 1e-9)
                data.setdefault(group, {}).setdefault(contender, {})[int(n)] = rate
    return data


def table(group, series):
    sizes = sorted({n for s in series.values() for n in s})
    rows = [
        f"#### {group.replace('fanout_', '')} payload (median deliveries/s, millions)",
        "",
        "| N | wshub | wshub_owned | tokio broadcast | RwLock<HashMap> | wshub / tokio | wshub / RwLock | owned / tokio |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in sizes:
        w = series.get("wshub", {}).get(n)
        o = series.get("wshub_owned", {}).get(n)
        t = series.get("tokio_broadcast", {}).get(n)
        r = series.get("rwlock_hashmap", {}).get(n)
        fmt = lambda v: f"{v / 1e6:.1f}" if v else "–"
        ratio = lambda a, b: f"{a / b:.2f}×" if a and b else "–"
        rows.append(
            f"| {n:,} | {fmt(w)} | {fmt(o)} | {fmt(t)} | {fmt(r)} | {ratio(w, t)} | {ratio(w, r)} | {ratio(o, t)} |"
        )
    return "\n".join(rows)


def svg(group, series, path):
    width, height, left, right, top, bottom = 640, 400, 70, 170, 30, 50
    points = [(n, v) for s in series.values() for n, v in s.items()]
    if not points:
        return
    xs = [math.log10(n) for n, _ in points]
    ys = [math.log10(v) for _, v in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = math.floor(min(ys) * 2) / 2, math.ceil(max(ys) * 2) / 2
    sx = lambda x: left + (math.log10(x) - x0) / (x1 - x0) * (width - left - right)
    sy = lambda y: top + (y1 - math.log10(y)) / (y1 - y0) * (height - top - bottom)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="18" font-size="14">Fan-out, {group.replace("fanout_", "")} payload: '
        f"deliveries/s vs members (log-log)</text>",
    ]
    for n in sorted({n for n, _ in points}):
        x = sx(n)
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{height - bottom}" stroke="#eee"/>')
        out.append(f'<text x="{x:.1f}" y="{height - bottom + 16}" text-anchor="middle">{n:,}</text>')
    y = y0
    while y <= y1 + 1e-9:
        py = sy(10**y)
        out.append(f'<line x1="{left}" y1="{py:.1f}" x2="{width - right}" y2="{py:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{left - 6}" y="{py + 4:.1f}" text-anchor="end">{10**y / 1e6:.3g}M</text>')
        y += 0.5
    out.append(f'<text x="{(left + width - right) / 2}" y="{height - 12}" text-anchor="middle">members (N)</text>')
    for i, (name, color) in enumerate(CONTENDERS):
        s = series.get(name)
        if not s:
            continue
        pts = " ".join(f"{sx(n):.1f},{sy(v):.1f}" for n, v in sorted(s.items()))
        out.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"/>')
        for n, v in sorted(s.items()):
            out.append(f'<circle cx="{sx(n):.1f}" cy="{sy(v):.1f}" r="3" fill="{color}"/>')
        ly = top + 20 + i * 20
        out.append(f'<line x1="{width - right + 15}" y1="{ly}" x2="{width - right + 35}" y2="{ly}" stroke="{color}" stroke-width="2"/>')
        out.append(f'<text x="{width - right + 40}" y="{ly + 4}">{name}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "target/criterion"
    docs = sys.argv[2] if len(sys.argv) > 2 else "docs"
    data = load(root)
    if not data:
        sys.exit(f"no fanout results under {root}: run `cargo bench --bench fanout` first")
    os.makedirs(docs, exist_ok=True)
    for group, series in sorted(data.items(), key=lambda g: int(g[0].split("_")[1].rstrip("B"))):
        print(table(group, series))
        print()
        path = os.path.join(docs, f"{group}.svg")
        svg(group, series, path)
        print(f"![{group}]({path})")
        print()


if __name__ == "__main__":
    main()
