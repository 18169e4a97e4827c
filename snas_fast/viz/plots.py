"""Figures of a search: architecture weights over epochs, derived cells and learning curves.

Drawn with matplotlib's Agg canvas on :class:`matplotlib.figure.Figure` objects, never through ``pyplot``:
nothing opens a window, and the caller's pyplot backend and state are left alone. Each function writes a PNG
(parent folders are created) and returns its path; the ``*_figure`` twins return the
:class:`~matplotlib.figure.Figure` instead (for a notebook, or ``SummaryWriter.add_figure``).
"""
from __future__ import annotations

import math
import operator
import os
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Circle, FancyArrowPatch
from matplotlib.path import Path as MplPath
from matplotlib.ticker import MaxNLocator

__all__ = [
    "PRIMITIVES",
    "alphas_figure",
    "anytime_figure",
    "cell_figure",
    "curves_figure",
    "edge_names",
    "morph_tree_figure",
    "plot_anytime",
    "plot_alphas",
    "plot_cell",
    "plot_curves",
    "plot_morph_tree",
]

from ..spaces.darts.space import NUM_EDGES, NUM_NODES, PRIMITIVES, DartsSpace, space_of  # noqa: E402  (the columns of log_alpha)

PathLike = Union[str, "os.PathLike[str]"]

# One colour per candidate, the same in every panel: each primitive's own (DartsSpace.colour); `none` dashed.
_STEPS = NUM_NODES  # intermediate nodes per cell
_EDGES = NUM_EDGES  # 14: node i has i + 2 inputs

_INPUT_TEX = ("$c_{k-2}$", "$c_{k-1}$")
_OUTPUT_TEX = "$c_{k}$"


def _op_colour(op: str, space: Optional[DartsSpace] = None) -> str:
    """The colour of a candidate in every figure here (its primitive's, :meth:`DartsSpace.colour`); dark grey for
    ops outside the space (DARTS's by default)."""
    space = space_of(space)
    return space.colour(op) if op in space.op_names else "#303030"


def _node_tex(j: int) -> str:
    """Node j as a genotype numbers it: 0 = c_{k-2}, 1 = c_{k-1}, j >= 2 the intermediate node j (shown as j)."""
    return _INPUT_TEX[j] if j < 2 else str(j)


def edge_names(steps: int = _STEPS) -> List[Tuple[int, int]]:
    """(input_node, i) of each row of an alpha matrix, in the DARTS order, i the 0-based intermediate node (node
    i + 2 in a genotype's numbering): node 2 <- 0, 1; node 3 <- 0, 1, 2; node 4 <- 0..3; node 5 <- 0..4 (14 rows
    for 4 steps)."""
    return [(j, i) for i in range(steps) for j in range(i + 2)]


def _new_figure(**kw) -> Figure:
    """A Figure on its own Agg canvas: no pyplot, no window, nothing registered globally."""
    fig = Figure(**kw)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi="figure")
    return path


# --------------------------------------------------------------------------------------------------------------
# Architecture weights over epochs


def _is_matrix(rows, n_rows: int) -> bool:
    return (isinstance(rows, Sequence) and not isinstance(rows, str) and len(rows) == n_rows
            and all(isinstance(r, Sequence) and not isinstance(r, str) and len(r) == len(rows[0]) > 0 for r in rows))


def _describe(rows) -> str:
    """'14 x 8', '3 x ?' or a type name: what came instead of a matrix."""
    if not isinstance(rows, Sequence) or isinstance(rows, str):
        return type(rows).__name__
    lengths = sorted({len(r) if isinstance(r, Sequence) else -1 for r in rows})
    cols = str(lengths[0]) if len(lengths) == 1 and lengths[0] >= 0 else f"rows of lengths {lengths}"
    return f"{len(rows)} x {cols}" if rows else "an empty list"


def _check_history(history: Sequence[Mapping]) -> Dict[str, List[List[List[float]]]]:
    """history -> {"normal_alpha": [epochs][14][K], "reduce_alpha": ...}, checked."""
    if isinstance(history, Mapping) or not isinstance(history, Sequence) or len(history) == 0:
        raise ValueError(f"history: expected a non-empty list of per-epoch dicts, got {type(history).__name__}"
                         + (" of length 0" if isinstance(history, Sequence) and not isinstance(history, Mapping)
                            else ""))
    out: Dict[str, List[List[List[float]]]] = {}
    n_ops = None
    for key in ("normal_alpha", "reduce_alpha"):
        series = []
        for e, entry in enumerate(history):
            if not isinstance(entry, Mapping) or key not in entry:
                got = sorted(entry) if isinstance(entry, Mapping) else type(entry).__name__
                raise ValueError(f"history[{e}]: expected a dict with '{key}', got {got}")
            rows = entry[key]
            rows = rows.tolist() if hasattr(rows, "tolist") else rows  # tensors and arrays too
            if not _is_matrix(rows, _EDGES):
                raise ValueError(f"history[{e}]['{key}']: expected a {_EDGES} x K nested list (K candidates per "
                                 f"edge), got {_describe(rows)}")
            if n_ops is None:
                n_ops = len(rows[0])
            elif len(rows[0]) != n_ops:
                raise ValueError(f"history[{e}]['{key}']: expected {n_ops} candidates per edge like history[0], "
                                 f"got {len(rows[0])}")
            series.append([[float(v) for v in r] for r in rows])
        out[key] = series
    return out


def plot_alphas(history: Sequence[Mapping], path: PathLike, op_names: Optional[Sequence[str]] = None,
                title: Optional[str] = None, space: Optional[DartsSpace] = None) -> Path:
    """Write :func:`alphas_figure` of ``history`` to the PNG ``path`` and return the path."""
    return _save(alphas_figure(history, op_names, title, space), path)


def alphas_figure(history: Sequence[Mapping], op_names: Optional[Sequence[str]] = None,
                  title: Optional[str] = None, space: Optional[DartsSpace] = None) -> Figure:
    """The probability of each candidate on each edge over the epochs, normal and reduction cell side by side.

    Each cell is drawn as a triangle of 14 panels: row ``i`` holds the edges into intermediate node ``i``
    (``c_{k-2} -> i``, ``c_{k-1} -> i``, ``0 -> i``, ...). Each panel has one line per candidate, coloured the same
    in every panel, against the uniform level ``1/K`` (dotted); one legend serves all panels.

    Args:
        history: one dict per epoch with ``"normal_alpha"`` and ``"reduce_alpha"``, each a 14 x K nested list
            (or tensor) of softmax(log_alpha) per edge, rows in :func:`edge_names` order.
        op_names: the K candidate names; default the names of ``space``'s primitives (DARTS's 8) when there are
            K of them, else ``op 0``, ``op 1``, ...
        title: text above the figure (newlines make several lines).
        space: the space whose primitives give the names and colours (DARTS's by default).
    """
    series = _check_history(history)
    n_epochs, n_ops = len(history), len(series["normal_alpha"][0][0])
    if op_names is None:
        names = space_of(space).op_names
        op_names = names if n_ops == len(names) else tuple(f"op {k}" for k in range(n_ops))
    elif len(op_names) != n_ops:
        raise ValueError(f"op_names: expected {n_ops} names (one per candidate), got {len(op_names)}")
    known = space_of(space).op_names
    colours = [_op_colour(name, space) if name in known else f"C{k % 10}" for k, name in enumerate(op_names)]
    styles = ["--" if name == "none" else "-" for name in op_names]
    epochs = list(range(1, n_epochs + 1))
    marker = "o" if n_epochs <= 12 else None  # a single epoch is a point, not a line
    top = max(max(max(r) for r in epoch_rows) for s in series.values() for epoch_rows in s)
    ymax = min(1.0, max(0.3, top * 1.08))

    # A fixed layout, in figure fractions of a 17 x 9.2 in canvas: two blocks of 4 x 5 cells, a gutter between
    # them wide enough for the right block's tick labels. (constrained_layout gets the same picture at three
    # times the drawing cost.)
    fig = _new_figure(figsize=(17, 9.2), dpi=100)
    title_lines = title.count("\n") + 1 if title else 0
    top = 0.9 - 0.025 * title_lines
    blocks = ((0.045, 0.485, "normal_alpha", "normal cell"), (0.545, 0.985, "reduce_alpha", "reduction cell"))
    legend_anchor = None
    for left, right, key, cell_name in blocks:
        grid = fig.add_gridspec(_STEPS, _STEPS + 1, left=left, right=right, top=top, bottom=0.065,
                                wspace=0.12, hspace=0.62)
        fig.text((left + right) / 2, top + 0.04, cell_name, ha="center", va="bottom", fontsize=15,
                 fontweight="bold")
        for e, (j, i) in enumerate(edge_names()):
            ax = fig.add_subplot(grid[i, j])
            for k in range(n_ops):
                ax.plot(epochs, [series[key][t][e][k] for t in range(n_epochs)], color=colours[k],
                        linestyle=styles[k], linewidth=1.6, marker=marker, markersize=3.5)
            ax.axhline(1.0 / n_ops, color="black", linewidth=0.8, linestyle=":", alpha=0.6)
            ax.set_title(f"{_node_tex(j)} $\\rightarrow$ {_node_tex(i + 2)}", fontsize=11)
            ax.set_ylim(0, ymax)
            ax.set_xlim(*((0.5, 1.5) if n_epochs == 1 else (1, n_epochs)))
            ax.tick_params(labelsize=8.5)
            ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True, min_n_ticks=1))
            ax.grid(alpha=0.25)
            if j == 0:
                ax.set_ylabel("probability", fontsize=9.5)
            else:
                ax.tick_params(labelleft=False)
            if j == i + 1:  # the last panel of a row: the bottom of its column of the triangle
                ax.set_xlabel("epoch", fontsize=9.5)
        if legend_anchor is None:  # the empty top right of the first triangle holds the one legend
            cells = grid[0, 2:].get_position(fig)
            legend_anchor = (cells.x0, cells.y0, cells.width, cells.height)
    handles = [Line2D([], [], color=colours[k], linestyle=styles[k], linewidth=2.2, marker=marker,
                      markersize=4.5, label=op_names[k]) for k in range(n_ops)]
    handles.append(Line2D([], [], color="black", linestyle=":", linewidth=1.2, label=f"uniform (1/{n_ops})"))
    fig.legend(handles=handles, loc="center", bbox_to_anchor=legend_anchor, ncol=2, fontsize=10.5,
               frameon=False, title="candidate op", title_fontsize=12, columnspacing=1.5, handlelength=2.6)
    if title:
        fig.suptitle(title, fontsize=16 if title_lines == 1 else 12.5, y=0.995, va="top")
    return fig


# --------------------------------------------------------------------------------------------------------------
# Derived cell


def _check_cell(cell: Sequence) -> List[Tuple[str, int, int]]:
    """cell -> [(op_name, input_node, intermediate_node)], checked."""
    try:
        entries = [tuple(e) for e in cell]
    except TypeError:
        raise ValueError(f"cell: expected a list of (op_name, input_node) pairs, got {type(cell).__name__}") from None
    if len(entries) == 2 * _STEPS:  # DARTS genotype: two inputs per node
        owners = [n // 2 for n in range(len(entries))]
    elif len(entries) == _EDGES:  # every edge, in edge_names() order
        owners = [i for _, i in edge_names()]
    else:
        raise ValueError(f"cell: expected {2 * _STEPS} (op_name, input_node) pairs (2 per node, a DARTS genotype) "
                         f"or {_EDGES} (every edge), got {len(entries)}")
    out = []
    for n, (entry, i) in enumerate(zip(entries, owners)):
        if len(entry) != 2 or not isinstance(entry[0], str):
            raise ValueError(f"cell[{n}]: expected an (op_name: str, input_node: int) pair, got {entry!r}")
        op, j = entry
        try:
            j = operator.index(j)  # ints, numpy and 0-d torch integers
        except TypeError:
            j = None
        if j is None or isinstance(entry[1], bool) or not 0 <= j < i + 2:
            raise ValueError(f"cell[{n}]: expected input_node in [0, {i + 2}) for intermediate node {i}, "
                             f"got {entry[1]!r}")
        out.append((op, j, i))
    return out


def plot_cell(cell: Sequence[Tuple[str, int]], path: PathLike, title: Optional[str] = None,
              space: Optional[DartsSpace] = None) -> Path:
    """Write :func:`cell_figure` of ``cell`` to the PNG ``path`` and return the path."""
    return _save(cell_figure(cell, title, space), path)


def cell_figure(cell: Sequence[Tuple[str, int]], title: Optional[str] = None,
                space: Optional[DartsSpace] = None) -> Figure:
    """A derived cell as an arc diagram: nodes on one line in topological order, one labelled arc per live edge.

    Nodes left to right: ``c_{k-2}``, ``c_{k-1}``, intermediate nodes 2..5 (numbered as the input indices of a
    genotype: an entry ``(op, 4)`` reads node 4), output ``c_{k}``. Every live edge
    arcs above the line with its op written at its apex (arcs of one span share a height and sit a node
    spacing apart, so labels never meet); ``none`` edges are left out. The output node concatenates every
    intermediate node (grey arcs below the line). A node with no live input is greyed and dashed.

    Args:
        cell: (op_name, input_node) pairs grouped by intermediate node in order: 8 entries (2 per node, a DARTS
            genotype) or 14 (every edge, :func:`edge_names` order). input_node 0 = c_{k-2}, 1 = c_{k-1}, j >= 2 =
            intermediate node j (drawn as j).
        title: a line above the diagram, e.g. ``"normal cell (epoch 50)"``.
    """
    entries = _check_cell(cell)
    live: Dict[Tuple[int, int], List[str]] = {}
    for op, j, i in entries:
        if op != "none":
            live.setdefault((j, i + 2), []).append(op)  # positions: 0, 1 inputs; 2..5 intermediate; 6 output
    fed = {b for (_, b) in live}
    dead = [p for p in range(2, 2 + _STEPS) if p not in fed]
    out_pos = 2 + _STEPS

    # Geometry in inches (the axes fill the figure and 1 data unit = 1 inch), so text sizes are predictable.
    # An arc of span s (in node steps) peaks at height base + step * s: arcs of one span share a height and
    # their midpoints are a whole node spacing apart, which is wider than a label, so labels never meet.
    # Arcs leave and reach the nodes at an angle set by their span (short arcs steep, long arcs flatter), so
    # the arrowheads into one node sit side by side on its rim instead of on top of each other.
    unit, radius = 1.75, 0.38  # node spacing, node radius
    base, step = 0.36, 0.36  # labelled arcs, above the line
    concat_base, concat_step = 0.42, 0.16  # concatenation arcs, below the line, flatter
    angles = (86.0, 72.0, 58.0, 45.0, 34.0)  # degrees from the line at the rim, by span 1..5

    def apex(span: int, labelled: bool) -> float:
        return (base + step * span) if labelled else (concat_base + concat_step * span)

    label_pad = 0.3
    max_span = max([b - a for (a, b) in live] or [1])
    above = apex(max_span, True) + label_pad + (0.5 if title else 0.1)
    below = apex(out_pos - 2, False) + 0.45  # room for the note under the longest concatenation arc
    margin = radius + 0.35
    width = out_pos * unit + 2 * margin
    height = above + below
    fig = _new_figure(figsize=(width, height), dpi=120)
    ax = fig.add_axes((0, 0, 1, 1))
    x0, y0 = margin, below
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_aspect("equal")
    ax.axis("off")

    def xy(p: int) -> Tuple[float, float]:
        return x0 + p * unit, y0

    def arc(a: int, b: int, labelled: bool, colour: str, style: str, width_pt: float) -> Tuple[float, float]:
        """An arrow a -> b, bulging up when labelled and down otherwise; returns its apex."""
        span = b - a
        side = 1.0 if labelled else -1.0
        theta = math.radians(angles[min(span, len(angles)) - 1])
        cos, sin = math.cos(theta), side * math.sin(theta)
        (xa, ya), (xb, yb) = xy(a), xy(b)
        # A symmetric cubic Bezier from rim to rim, leaving a and reaching b at theta from the line. Its control
        # points lie `reach` along those directions, and it peaks halfway at r sin(theta) + 3/4 reach sin(theta);
        # reach is capped so the two control points never pass each other (the curve would fold).
        reach = (apex(span, labelled) - radius * abs(sin)) / (0.75 * abs(sin))
        reach = min(reach, span * unit / (2 * cos) - radius)
        p0 = (xa + radius * cos, ya + radius * sin)
        p3 = (xb - radius * cos, yb + radius * sin)
        p1 = (p0[0] + reach * cos, p0[1] + reach * sin)
        p2 = (p3[0] - reach * cos, p3[1] + reach * sin)
        ax.add_patch(FancyArrowPatch(path=MplPath([p0, p1, p2, p3], [MplPath.MOVETO] + [MplPath.CURVE4] * 3),
                                     arrowstyle="-|>,head_length=7,head_width=2.6", mutation_scale=1,
                                     color=colour, linestyle=style, linewidth=width_pt,
                                     zorder=2 if labelled else 1))
        return (xa + xb) / 2, (p0[1] + 3 * p1[1] + 3 * p2[1] + p3[1]) / 8

    for b in range(2, out_pos):  # concatenation into the output: unlabelled, grey, below the line
        arc(b, out_pos, False, "#a8a8a8", "--" if b in dead else "-", 1.1)
    for (a, b), ops in sorted(live.items()):
        # coloured by op as in plot_alphas, so an arc and its label pair up by colour in a busy cell
        colour = _op_colour(ops[0], space) if len(ops) == 1 else "#303030"
        mx, my = arc(a, b, True, colour, "-", 1.5)
        ax.text(mx, my, "\n".join(ops), ha="center", va="center", fontsize=10.5, zorder=4,
                bbox=dict(boxstyle="round,pad=0.25", facecolor="white", edgecolor=colour, linewidth=1.2))

    for p in range(out_pos + 1):
        if p < 2:
            face, edge, text, label, style = "#c1e1c1", "#4a7a4a", "black", _INPUT_TEX[p], "-"
        elif p == out_pos:
            face, edge, text, label, style = "#eee8aa", "#8a7f2a", "black", _OUTPUT_TEX, "-"
        elif p in dead:
            face, edge, text, label, style = "#ececec", "#a0a0a0", "#9a9a9a", str(p), "--"
        else:
            face, edge, text, label, style = "#add8e6", "#3a6f8a", "black", str(p), "-"
        ax.add_patch(Circle(xy(p), radius, facecolor=face, edgecolor=edge, linewidth=1.5, linestyle=style, zorder=5))
        ax.text(*xy(p), label, ha="center", va="center", fontsize=13, color=text, zorder=6)

    notes = ["nodes numbered as genotype inputs ($c_{k-2}$ = 0, $c_{k-1}$ = 1)", "grey arcs: concatenation into $c_{k}$"]
    if dead:
        notes.append(f"greyed node{'s' if len(dead) > 1 else ''} {', '.join(str(p) for p in dead)}: no live input")
    ax.text(0.12, 0.08, ";  ".join(notes), ha="left", va="bottom", fontsize=9, color="#606060")
    if title:
        ax.text(width / 2, height - 0.1, title, ha="center", va="top", fontsize=14, fontweight="bold")
    return fig


# --------------------------------------------------------------------------------------------------------------
# Learning curves


def _group(key: str) -> str:
    k = key.lower()
    if "loss" in k:
        return "loss"
    if "acc" in k:
        return "accuracy"
    return key


def plot_curves(metrics: Sequence[Mapping[str, float]], path: PathLike, keys: Optional[Sequence[str]] = None,
                title: Optional[str] = None) -> Path:
    """Write :func:`curves_figure` of ``metrics`` to the PNG ``path`` and return the path."""
    return _save(curves_figure(metrics, keys, title), path)


def curves_figure(metrics: Sequence[Mapping[str, float]], keys: Optional[Sequence[str]] = None,
                  title: Optional[str] = None) -> Figure:
    """Learning curves, one panel per group of keys: every ``*loss*`` key shares a panel, every ``*acc*`` key
    another, and any other key (a temperature, a learning rate) gets its own.

    Args:
        metrics: one dict per epoch. The x axis is each dict's ``"epoch"`` when present, else 1, 2, ...
            A key absent (or None) in some epochs is drawn where present, e.g. a child accuracy measured
            every few epochs.
        keys: the keys to draw, in legend order; default every numeric key but ``"epoch"``, in first-seen order.
        title: a line above the figure.
    """
    if isinstance(metrics, Mapping) or not isinstance(metrics, Sequence) or len(metrics) == 0:
        raise ValueError(f"metrics: expected a non-empty list of per-epoch dicts, got {type(metrics).__name__}"
                         + (" of length 0" if isinstance(metrics, Sequence) and not isinstance(metrics, Mapping)
                            else ""))
    for e, m in enumerate(metrics):
        if not isinstance(m, Mapping):
            raise ValueError(f"metrics[{e}]: expected a dict of numbers, got {type(m).__name__}")

    def number(v) -> bool:
        if isinstance(v, bool):
            return False
        return isinstance(v, (int, float)) or (hasattr(v, "item") and getattr(v, "ndim", None) == 0)

    if keys is None:
        keys = []
        for m in metrics:
            keys += [k for k, v in m.items() if k != "epoch" and k not in keys and number(v)]
        if not keys:
            raise ValueError("keys: metrics hold no numeric key besides 'epoch'; pass keys explicitly")
    else:
        keys = list(keys)
        for k in keys:
            if not any(m.get(k) is not None for m in metrics):
                seen = sorted({s for m in metrics for s in m})
                raise ValueError(f"keys: expected keys present in metrics, got {k!r} (metrics hold {seen})")

    for k in keys:
        for e, m in enumerate(metrics):
            if m.get(k) is not None and not number(m[k]):
                raise ValueError(f"metrics[{e}][{k!r}]: expected a number, got {m[k]!r}")

    groups: Dict[str, List[str]] = {}
    for k in keys:
        groups.setdefault(_group(k), []).append(k)
    order = sorted(groups, key=lambda g: (g != "loss", g != "accuracy"))  # loss, accuracy, then others as given

    n = len(order)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = _new_figure(figsize=(5.6 * cols, 4.0 * rows + (0.4 if title else 0)), dpi=100, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    xs_all = [m.get("epoch", e + 1) for e, m in enumerate(metrics)]
    colour = {k: f"C{n_k % 10}" for n_k, k in enumerate(keys)}
    for ax, g in zip(axes.flat, order):
        for k in groups[g]:
            pts = [(x, float(m[k])) for x, m in zip(xs_all, metrics) if m.get(k) is not None]
            sparse = len(pts) < len(metrics) or len(pts) <= 12
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=k, color=colour[k], linewidth=1.8,
                    marker="o" if sparse else None, markersize=4)
        ax.set_title(g, fontsize=13)
        ax.set_xlabel("epoch", fontsize=11)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True, min_n_ticks=1))
        ax.tick_params(labelsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=10)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=14)
    return fig


def plot_scatter(points: Mapping[str, Sequence[Tuple[float, float]]], path: PathLike, xlabel: str, ylabel: str,
                 title: Optional[str] = None, logx: bool = False) -> Path:
    """Write :func:`scatter_figure` to the PNG ``path`` and return the path."""
    return _save(scatter_figure(points, xlabel, ylabel, title, logx), path)


def scatter_figure(points: Mapping[str, Sequence[Tuple[float, float]]], xlabel: str, ylabel: str,
                   title: Optional[str] = None, logx: bool = False) -> Figure:
    """One marker colour per label: ``points[label]`` is a list of ``(x, y)`` (e.g. one per strategy and seed, or
    one per architecture for a ranking). ``logx``: a logarithmic x axis (search seconds span decades)."""
    if not isinstance(points, Mapping) or not points:
        raise ValueError(f"points: expected a non-empty mapping label -> [(x, y), ...], got {points!r}")
    fig = _new_figure(figsize=(6.0, 4.2), layout="constrained")
    ax = fig.add_subplot()
    for k, (label, xy) in enumerate(points.items()):
        xy = [(float(x), float(y)) for x, y in xy if math.isfinite(float(x)) and math.isfinite(float(y))]
        if xy:
            ax.scatter([x for x, _ in xy], [y for _, y in xy], s=28, color=f"C{k % 10}", label=str(label),
                       alpha=0.8, edgecolors="none")
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if len(points) > 1:
        ax.legend(fontsize=8, frameon=False)
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def plot_pareto(points: Mapping[str, Sequence[Tuple[float, float, bool]]], path: PathLike, xlabel: str,
                ylabel: str, title: Optional[str] = None) -> Path:
    """Write :func:`pareto_figure` to the PNG ``path`` and return the path."""
    return _save(pareto_figure(points, xlabel, ylabel, title), path)


def pareto_figure(points: Mapping[str, Sequence[Tuple[float, float, bool]]], xlabel: str, ylabel: str,
                  title: Optional[str] = None) -> Figure:
    """Accuracy against cost per method: ``points[method]`` is a list of ``(cost, accuracy, on_front)``; the front
    is a step line through its points (lower cost, higher accuracy is better), dominated points are faint."""
    if not isinstance(points, Mapping) or not points:
        raise ValueError(f"points: expected a non-empty mapping method -> [(cost, accuracy, on_front), ...], "
                         f"got {points!r}")
    fig = _new_figure(figsize=(6.0, 4.2), layout="constrained")
    ax = fig.add_subplot()
    for k, (label, pts) in enumerate(points.items()):
        colour = f"C{k % 10}"
        front = sorted((float(c), float(a)) for c, a, on in pts if on)
        rest = [(float(c), float(a)) for c, a, on in pts if not on]
        if rest:
            ax.scatter([c for c, _ in rest], [a for _, a in rest], s=22, color=colour, alpha=0.25, edgecolors="none")
        if front:
            ax.step([c for c, _ in front], [a for _, a in front], where="post", color=colour, lw=1.4)
            ax.scatter([c for c, _ in front], [a for _, a in front], s=30, color=colour, label=str(label),
                       edgecolors="none")
    return _labelled(fig, ax, xlabel, ylabel, title)


def _labelled(fig: Figure, ax, xlabel: str, ylabel: str, title: Optional[str]) -> Figure:
    """``fig`` with its axes labelled, a light grid, the legend and the (small) title."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def plot_anytime(curves: Mapping[str, Sequence[Sequence[float]]], path: PathLike,
                 oracles: Optional[Mapping[str, float]] = None, ylabel: str = "test",
                 title: Optional[str] = None) -> Path:
    """Write :func:`anytime_figure` to the PNG ``path`` and return the path."""
    return _save(anytime_figure(curves, oracles, ylabel, title), path)


def anytime_figure(curves: Mapping[str, Sequence[Sequence[float]]], oracles: Optional[Mapping[str, float]] = None,
                   ylabel: str = "test", title: Optional[str] = None) -> Figure:
    """A benchmark's anytime curves: ``curves[strategy]`` is one list per seed of the value after each query
    (``[seeds][queries]``, equal lengths); the mean as a line and ± one std as a band against queries on a log
    scale; ``oracles`` (``{label: value}``) as dashed horizontal lines."""
    import numpy as np

    if not isinstance(curves, Mapping) or not curves:
        raise ValueError(f"curves: expected a non-empty mapping strategy -> [[value per query] per seed], got "
                         f"{curves!r}")
    fig = _new_figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.add_subplot()
    for k, (label, runs) in enumerate(curves.items()):
        values = np.asarray(runs, dtype=float)
        if values.ndim != 2 or values.shape[1] == 0:
            raise ValueError(f"curves[{label!r}]: expected [seeds][queries] of equal lengths, got shape "
                             f"{values.shape}")
        q = np.arange(1, values.shape[1] + 1)
        mean, std = np.nanmean(values, 0), np.nanstd(values, 0)
        ax.plot(q, mean, color=f"C{k % 10}", lw=1.4, label=str(label))
        ax.fill_between(q, mean - std, mean + std, color=f"C{k % 10}", alpha=0.15, lw=0)
    for k, (label, value) in enumerate((oracles or {}).items()):
        ax.axhline(value, color="0.3", ls=("--", ":")[k % 2], lw=1.0, label=label.replace("_", " "))
    ax.set_xscale("log")
    return _labelled(fig, ax, "queries", ylabel, title)


# --------------------------------------------------------------------------------------------------------------
# The morph tree of a network-morphism search


def plot_morph_tree(rows: Sequence[Mapping], path: PathLike, title: Optional[str] = None) -> Path:
    """Write :func:`morph_tree_figure` to the PNG ``path`` and return the path."""
    return _save(morph_tree_figure(rows, title), path)


def morph_tree_figure(rows: Sequence[Mapping], title: Optional[str] = None) -> Figure:
    """The tree of a morphism search (:mod:`snas_fast.search.morph`): one node per trained network (``rows``:
    ``model_id``, ``parent`` (None for the root), ``val_acc``), an edge from each father to its child (one or
    more morphisms), generations downwards, coloured by validation accuracy; the best network ringed."""
    rows = list(rows)
    if not rows or any(not {"model_id", "parent", "val_acc"} <= set(r) for r in rows):
        raise ValueError("rows: expected a non-empty list of {model_id, parent, val_acc} (history.csv's rows)")
    children: Dict[object, List[int]] = {}
    for r in rows:
        children.setdefault(r["parent"], []).append(r["model_id"])
    x: Dict[int, float] = {}
    depth: Dict[int, int] = {}
    leaves = [0]

    def place(node: int, d: int) -> float:  # leaves left to right, a father above the middle of its children
        depth[node] = d
        kids = children.get(node, [])
        if kids:
            x[node] = sum(place(k, d + 1) for k in kids) / len(kids)
        else:
            x[node], leaves[0] = float(leaves[0]), leaves[0] + 1
        return x[node]

    for root in children.get(None, []):
        place(root, 0)
    acc = {r["model_id"]: float(r["val_acc"]) for r in rows}
    fig = _new_figure(figsize=(max(6.0, 0.25 * leaves[0] + 2), max(3.0, 0.6 * (max(depth.values()) + 1) + 1.5)),
                      layout="constrained")
    ax = fig.add_subplot()
    for r in rows:
        if r["parent"] is not None and r["parent"] in x:
            ax.plot([x[r["parent"]], x[r["model_id"]]], [-depth[r["parent"]], -depth[r["model_id"]]],
                    color="0.6", lw=0.8, zorder=1)
    ids = [i for i in x]
    points = ax.scatter([x[i] for i in ids], [-depth[i] for i in ids], c=[acc[i] for i in ids], cmap="viridis",
                        s=60, zorder=2, edgecolors="none")
    best = max(acc, key=acc.get)
    ax.scatter([x[best]], [-depth[best]], s=180, facecolors="none", edgecolors="red", lw=1.5, zorder=3)
    if len(ids) <= 60:
        for i in ids:
            ax.annotate(str(i), (x[i], -depth[i]), xytext=(0, 7), textcoords="offset points", fontsize=6,
                        ha="center", va="bottom", zorder=4)
    fig.colorbar(points, ax=ax, label="validation accuracy")
    ax.set_yticks([-d for d in range(max(depth.values()) + 1)], [str(d) for d in range(max(depth.values()) + 1)])
    ax.set_ylabel("generation (trained ancestors)")
    ax.set_xticks([])
    ax.set_title(title or f"morph tree: {len(rows)} networks; best (ringed): model {best}, {acc[best]:.4f}",
                 fontsize=9)
    return fig
