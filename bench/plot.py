"""Draws PNG plots from a benchmark CSV (columns date, device, torch, variant, config, metric, value, unit).

    python bench/plot.py bench/results.csv --out bench/plots

One figure per metric (fwd_ms, fwd_bwd_ms, fwd_peak_mem_mb, ...): a group of bars per config, one bar per
variant, with the fused/eager ratio written over the fused bar.
"""
from __future__ import annotations

import argparse
import csv
import os
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

METRICS = ("fwd_ms", "fwd_bwd_ms", "fwd_peak_mem_mb", "fwd_bwd_peak_mem_mb", "step_ms", "peak_mem_mb")
VARIANTS = ("fused", "eager", "compiled")
COLOURS = {"fused": "#d62728", "eager": "#7f7f7f", "compiled": "#1f77b4"}


def read(path):
    table = defaultdict(dict)  # (metric) -> {(config, variant): value}
    units, device = {}, None
    with open(path) as f:
        for row in csv.DictReader(f):
            table[row["metric"]][(row["config"], row["variant"])] = float(row["value"])
            units[row["metric"]] = row["unit"]
            device = f"{row['device']}, torch {row['torch']}, {row['date']}"
    return table, units, device


def plot_metric(values, metric, unit, device, path):
    configs = sorted({c for c, _ in values})
    variants = [v for v in VARIANTS if any((c, v) in values for c in configs)]
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(configs)), 4))
    width = 0.8 / max(len(variants), 1)
    for i, v in enumerate(variants):
        xs = [j + i * width for j in range(len(configs))]
        ys = [values.get((c, v), 0.0) for c in configs]
        ax.bar(xs, ys, width, label=v, color=COLOURS.get(v))
        if v == "fused":
            for x, c, y in zip(xs, configs, ys):
                eager = values.get((c, "eager"))
                if eager:
                    ax.annotate(f"{y / eager:.2f}x", (x, y), ha="center", va="bottom", fontsize=8)
    ax.set_xticks([j + width * (len(variants) - 1) / 2 for j in range(len(configs))])
    ax.set_xticklabels([c.replace("/", "\n") for c in configs], fontsize=8)
    ax.set_ylabel(f"{metric} ({unit})")
    ax.set_title(f"{metric}: fused vs eager vs compiled (ratio to eager over the fused bar)\n{device}", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csv", help="CSV written by a benchmark's --csv")
    parser.add_argument("--out", default="bench/plots", help="folder for the PNG files")
    args = parser.parse_args()
    if not os.path.exists(args.csv):
        parser.error(f"csv: no such file {args.csv!r}")
    table, units, device = read(args.csv)
    os.makedirs(args.out, exist_ok=True)
    for metric in METRICS:
        if metric in table:
            path = os.path.join(args.out, f"{metric}.png")
            plot_metric(table[metric], metric, units[metric], device, path)
            print(path)


if __name__ == "__main__":
    main()
