"""Draws PNG plots from a benchmark CSV (columns date, device, torch, variant, config, metric, value, unit).

    python bench/plot.py bench/results.csv --out bench/plots

Op benchmark (bench_mixed_op.py), one figure per metric and family, a group of bars per config, one bar per
variant (fused, eager, compiled), the p20-p80 range as an error bar on times, and the ratio to eager written over
every other bar:

- ``fwd_ms.png``, ``fwd_bwd_ms.png``, ``fwd_peak_mem_mb.png``, ``fwd_bwd_peak_mem_mb.png``: the fused weighted
  sum (``mixed``, ``gumbel`` configs);
- ``mixed_edge_fwd_ms.png``, ... : the deep-fused edge (``mixed_edge`` configs).

Search-step benchmark (bench_search_step.py):

- ``search_step.png``: step time (p20-p80 error bars), peak memory and bytes saved for backward, side by side,
  a group of bars per batch size, one bar per variant (fused, fused_sum, eager, hard, compiled, the floor, and
  the channels_last ``_cl`` and partial-channel ``_pc4`` ones), the ratio to eager over every other bar;
- ``search_step_max_batch.png``: the largest batch within the memory budget, per variant.

Drop-in benchmark (bench_fuse.py):

- ``fuse.png``: per network, the fused step's time and its bytes saved for backward over the unfused network's
  (the benchmark's ``fused/unfused`` rows: the step time's is the median of the paired ratios), with the targets
  (0.9x time, 0.6x memory) drawn as lines.

Rows whose variant is a ratio (``fused/eager``) are not drawn, but for ``fuse.png``; where a CSV holds several runs of one config, the
last row wins.
"""
from __future__ import annotations

import argparse
import csv
import os
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

OP_METRICS = ("fwd_ms", "fwd_bwd_ms", "fwd_peak_mem_mb", "fwd_bwd_peak_mem_mb")
OP_FAMILIES = {"": ("mixed", "gumbel"), "mixed_edge_": ("mixed_edge",)}  # file prefix -> config families
STEP_METRICS = ("step_ms", "peak_mem_mb", "saved_mb")
# the order of the bars: the op benchmark's variants, then the search step's (bench_search_step.VARIANTS: layouts
# and partial channels after the plain ones)
VARIANTS = ("fused", "fused_sum", "eager", "hard", "compiled", "floor", "fused_cl", "fused_sum_cl", "eager_cl",
            "floor_cl", "fused_pc4", "fused_sum_pc4", "eager_pc4", "fused_pc4_cl", "eager_pc4_cl")
COLOURS = {"fused": "#d62728", "fused_sum": "#ff7f0e", "eager": "#7f7f7f", "hard": "#2ca02c",
           "compiled": "#1f77b4", "floor": "#17becf", "floor_cl": "#9edae5", "fused_cl": "#ff9896",
           "fused_sum_cl": "#ffbb78", "eager_cl": "#c7c7c7",
           "fused_pc4": "#9467bd", "fused_sum_pc4": "#c5b0d5", "eager_pc4": "#8c564b", "fused_pc4_cl": "#e377c2",
           "eager_pc4_cl": "#c49c94"}


def read(path):
    table = defaultdict(dict)  # metric -> {(config, variant): value}
    units, devices = {}, []
    with open(path) as f:
        for row in csv.DictReader(f):
            if "/" in row["variant"] and row["metric"] not in ("step_ratio", "saved_ratio"):
                continue  # a ratio row (fused/eager): the plots compute their own, but fuse.png's paired ones
            table[row["metric"]][(row["config"], row["variant"])] = float(row["value"])
            units[row["metric"]] = row["unit"]
            device = f"{row['device']}, torch {row['torch']}, {row['date']}"
            if device not in devices:
                devices.append(device)
    return table, units, ";\n".join(devices)


def family(config: str) -> str:
    return config.split("/", 1)[0]


def batch_order(config: str):
    """search_step/C16_L8_32px/b64 sorts by network, then by batch as a number."""
    head, _, last = config.rpartition("/")
    return (head, int(last[1:]) if last[:1] == "b" and last[1:].isdigit() else 0, last)


def bars(ax, table, metric, configs, label=None, baseline="eager"):
    """Grouped bars of ``metric`` on ``ax``: a group per config, a bar per variant present, p20-p80 error bars
    where the CSV has them, the ratio to ``baseline`` over every other bar."""
    values = table.get(metric, {})
    variants = [v for v in VARIANTS if any((c, v) in values for c in configs)]
    width = 0.8 / max(len(variants), 1)
    for i, v in enumerate(variants):
        xs = [j + i * width for j in range(len(configs))]
        ys = [values.get((c, v), 0.0) for c in configs]
        err = None
        lo, hi = table.get(f"{metric}_p20", {}), table.get(f"{metric}_p80", {})
        if any((c, v) in lo for c in configs):
            err = [[max(y - lo.get((c, v), y), 0.0) for c, y in zip(configs, ys)],
                   [max(hi.get((c, v), y) - y, 0.0) for c, y in zip(configs, ys)]]
        ax.bar(xs, ys, width, label=v, color=COLOURS.get(v), yerr=err, capsize=2 if err else 0)
        if v != baseline:
            tops = [y + e for y, e in zip(ys, err[1])] if err else ys  # above the error bar
            for x, c, y, top in zip(xs, configs, ys, tops):
                base = values.get((c, baseline))
                if base and (c, v) in values:
                    ax.annotate(f"{y / base:.2f}x", (x, top), ha="center", va="bottom", fontsize=7)
    ax.set_xticks([j + width * (len(variants) - 1) / 2 for j in range(len(configs))])
    ax.set_xticklabels([c.replace("/", "\n") for c in configs], fontsize=7)
    ax.set_ylabel(label or metric)
    ax.legend(fontsize=7)
    return variants


def plot_op_metric(table, units, metric, configs, device, path):
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(configs)), 4))
    bars(ax, table, metric, configs, f"{metric} ({units[metric]})")
    ax.set_title(f"{metric}: fused vs eager vs compiled (ratio to eager over the bars)\n{device}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_search_step(table, units, configs, device, path):
    metrics = [m for m in STEP_METRICS if any(c in configs for c, _ in table.get(m, {}))]
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(5, 1.6 * len(configs)) * len(metrics), 4.2),
                             squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        bars(ax, table, metric, configs, f"{metric} ({units[metric]})")
        ax.set_title(metric, fontsize=9)
    fig.suptitle(f"SNAS search step per variant (ratio to eager over the bars)\n{device}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_max_batch(table, units, configs, device, path):
    fig, ax = plt.subplots(figsize=(max(6.5, 2.5 * len(configs)), 4))
    bars(ax, table, "max_batch", configs, f"max_batch ({units['max_batch']})")
    ax.set_title(f"largest batch within the memory budget\n(ratio to eager over the bars) {device}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_fuse(table, configs, device, path):
    """Horizontal bars per network (``fuse/<network>_...`` configs): fused/unfused step time and saved bytes."""
    names = [c.split("/", 1)[1].rsplit("_C", 1)[0] for c in configs]
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.35 * len(configs) + 1.6), sharey=True)
    for ax, metric, target, title in ((axes[0], "step_ratio", 0.9, "step time, fused / own (paired)"),
                                      (axes[1], "saved_ratio", 0.6, "saved for backward, fused / own")):
        ratios = [table[metric][(c, "fused/unfused")] for c in configs]
        ax.barh(range(len(configs)), ratios, color=[COLOURS["fused"] if r <= target else "#7f7f7f" for r in ratios])
        for y, r in enumerate(ratios):
            ax.text(r + 0.01, y, f"{r:.2f}", va="center", fontsize=7)
        ax.axvline(target, color="black", lw=0.8, ls="--")
        ax.axvline(1.0, color="#7f7f7f", lw=0.6)
        ax.set_yticks(range(len(configs)), names, fontsize=8)
        ax.set_xlim(0, 1.15)
        ax.set_title(f"{title} (target {target})", fontsize=9)
        ax.invert_yaxis()
    fig.suptitle(f"fuse_mixed_ops on the field's search code (grey: the target missed)\n{device}", fontsize=9)
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
    written = []
    for prefix, families in OP_FAMILIES.items():
        for metric in OP_METRICS:
            configs = sorted({c for c, _ in table.get(metric, {}) if family(c) in families})
            if configs:
                path = os.path.join(args.out, f"{prefix}{metric}.png")
                plot_op_metric(table, units, metric, configs, device, path)
                written.append(path)
    step_configs = sorted({c for m in STEP_METRICS for c, _ in table.get(m, {}) if family(c) == "search_step"},
                          key=batch_order)
    if step_configs:
        path = os.path.join(args.out, "search_step.png")
        plot_search_step(table, units, step_configs, device, path)
        written.append(path)
    budget_configs = sorted({c for c, _ in table.get("max_batch", {})})
    if budget_configs:
        path = os.path.join(args.out, "search_step_max_batch.png")
        plot_max_batch(table, units, budget_configs, device, path)
        written.append(path)
    fuse_configs = [c for c in dict.fromkeys(c for c, _ in table.get("saved_ratio", {}) if family(c) == "fuse")
                    if all((c, "fused/unfused") in table.get(m, {}) for m in ("step_ratio", "saved_ratio"))]
    if fuse_configs:
        path = os.path.join(args.out, "fuse.png")
        plot_fuse(table, fuse_configs, device, path)
        written.append(path)
    for path in written:
        print(path)


if __name__ == "__main__":
    main()
