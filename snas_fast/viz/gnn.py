"""Plots of a one-shot search on the graph space (:mod:`snas_fast.spaces.gnn`), as loop callbacks: ``alphas.png`` (every
cell's node and edge ``softmax(log_alpha)`` over the epochs), ``cell.png`` (the derived cells) and ``curves.png``."""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

from matplotlib.patches import Circle

from ..engine.loop import EpochEnd
from ..spaces.gnn.genotype import GraphGenotype, links
from ..spaces.gnn.operations import EDGE_OPS, NODE_OPS
from .plots import _new_figure, _save, plot_curves

__all__ = ["gnn_cell_figure", "gnn_alphas_figure", "gnn_search_plots"]

_COLOURS = ("#bbbbbb", "#4c72b0", "#dd8452", "#55a868", "#c44e52")


def gnn_alphas_figure(history: Sequence[Mapping], title: Optional[str] = None):
    """One panel per cell and kind (node, edge): each mixed operation's probabilities over the epochs, the
    operation's colour, one faint line per link. ``history[e]``: ``{"node_alpha": [cells][links][5], "edge_alpha":
    ...}``."""
    cells = len(history[0]["node_alpha"])
    fig = _new_figure(figsize=(4.2 * cells, 6.4), layout="constrained")
    axes = fig.subplots(2, cells, squeeze=False)
    epochs = list(range(1, len(history) + 1))
    for row, (key, names) in enumerate((("node_alpha", NODE_OPS), ("edge_alpha", EDGE_OPS))):
        for c in range(cells):
            ax = axes[row][c]
            L = len(history[0][key][c])
            for l in range(L):
                for k, name in enumerate(names):
                    ax.plot(epochs, [h[key][c][l][k] for h in history], color=_COLOURS[k], alpha=0.6, lw=1.2,
                            label=name if l == 0 else None, marker="o" if len(epochs) == 1 else None)
            ax.set_title(f"cell {c}: {key.split('_')[0]} operations", fontsize=9)
            ax.set_xlabel("epoch")
            ax.set_ylabel("softmax(log_alpha)")
            ax.legend(fontsize=7, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=8)
    return fig


def gnn_cell_figure(genotype: GraphGenotype, title: Optional[str] = None):
    """Each derived cell as its DAG: states 0, 1 (inputs) and 2 .. nodes + 1 on a line, an arc per link labelled
    ``node op / edge op`` (``none / none`` links left out)."""
    cells = len(genotype.cells)
    fig = _new_figure(figsize=(5.0 * cells, 3.4), layout="constrained")
    axes = fig.subplots(1, cells, squeeze=False)[0]
    for c, (node_ops, edge_ops) in enumerate(genotype.cells):
        ax = axes[c]
        n = genotype.nodes + 2
        for s in range(n):
            ax.add_patch(Circle((s, 0), 0.18,
                         color="#4c72b0" if s >= 2 else "#999999"))
            ax.text(s, 0, str(s), ha="center", va="center", color="white", fontsize=9)
        for l, (j, i) in enumerate(links(genotype.nodes)):
            if node_ops[l] == "none" and edge_ops[l] == "none":
                continue
            height = 0.35 * (i - j)
            xs = [j + 0.1, (i + j) / 2, i - 0.1]
            ax.plot(xs, [0.15, height, 0.15], color="#555555", lw=1)
            ax.text((i + j) / 2, height + 0.05, f"{node_ops[l]} / {edge_ops[l]}", ha="center", fontsize=7)
        ax.set_xlim(-0.5, n - 0.5)
        ax.set_ylim(-0.4, 0.35 * (n - 1) + 0.4)
        ax.set_axis_off()
        ax.set_title(f"cell {c} (node op / edge op)", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def gnn_search_plots(end: EpochEnd) -> None:
    """The figures of a graph search's run directory, after every epoch."""
    from ..search.convergence import summary

    task = end.task
    title = summary(task.arch, len(NODE_OPS), sep="\n")
    _save(gnn_alphas_figure(task.history, title), end.run.path("alphas.png"))
    _save(gnn_cell_figure(task.model.genotype(), "derived cells"), end.run.path("cell.png"))
    plot_curves(end.run.metrics(), end.run.path("curves.png"),
                keys=["train_loss", "val_loss", "train_acc", "val_acc", "child_val_acc"])
