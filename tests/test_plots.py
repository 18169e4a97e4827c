"""snas_fast.plots: each figure is written as a real PNG, and its text does not collide."""
from __future__ import annotations

import itertools
import struct
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("matplotlib")

from matplotlib.patches import Circle  # noqa: E402

from snas_fast.viz.plots import (  # noqa: E402
    PRIMITIVES,
    _save,
    alphas_figure,
    cell_figure,
    edge_names,
    plot_alphas,
    plot_cell,
    plot_curves,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# DARTS V2's normal cell: 8 entries, 2 per node.
DARTS_V2_NORMAL = [
    ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
    ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
    ("sep_conv_3x3", 1), ("skip_connect", 0),
    ("skip_connect", 0), ("dil_conv_3x3", 2),
]
# Every edge live, each op used: the busiest cell there is.
FULL_CELL = [(PRIMITIVES[1 + n % 7], j) for n, (j, _) in enumerate(edge_names())]


def _history(epochs: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    log_alpha, drift = torch.zeros(2, 14, 8), 0.2 * torch.randn(2, 14, 8, generator=g)
    out = []
    for _ in range(epochs):
        log_alpha = log_alpha + drift + 0.05 * torch.randn(2, 14, 8, generator=g)
        p = log_alpha.softmax(-1)
        out.append({"normal_alpha": p[0].tolist(), "reduce_alpha": p[1].tolist()})
    return out


def _png_size(path: Path):
    """(bytes, width, height) of a PNG, after checking its signature and that IHDR comes first."""
    blob = path.read_bytes()
    assert blob[:8] == PNG_SIGNATURE, f"{path} is not a PNG: starts with {blob[:8]!r}"
    assert blob[12:16] == b"IHDR", f"{path}: first chunk is {blob[12:16]!r}, expected IHDR"
    width, height = struct.unpack(">II", blob[16:24])
    return len(blob), width, height


def _overlaps(a, b, slack: float = 0.0) -> bool:
    """Two display-space Bboxes overlap by more than `slack` pixels on both axes."""
    return (min(a.x1, b.x1) - max(a.x0, b.x0) > slack) and (min(a.y1, b.y1) - max(a.y0, b.y0) > slack)


# ---------------------------------------------------------------------------------------------------- alphas


def test_plot_alphas_single_epoch_of_tensors(tmp_path):
    history = [{k: torch.tensor(v) for k, v in h.items()} for h in _history(1)]
    path = plot_alphas(history, tmp_path / "deep" / "alphas.png")  # parent folders are created
    size, width, height = _png_size(path)
    assert size > 20_000, f"alpha grid of {size} bytes: suspiciously empty"
    assert (width, height) == (1700, 920)


def test_alphas_figure_layout(tmp_path):
    """25 epochs: written as a PNG like plot_alphas does, and nothing in it collides or is cut off."""
    fig = alphas_figure(_history(25), title="a title")
    size, width, height = _png_size(_save(fig, tmp_path / "alphas.png"))
    assert size > 20_000 and (width, height) == (1700, 920)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    panels = fig.get_axes()
    assert len(panels) == 28  # 14 edges x 2 cells
    titles = sorted(ax.get_title() for ax in panels)
    assert titles.count(r"$c_{k-2}$ $\rightarrow$ 2") == 2 and titles.count(r"4 $\rightarrow$ 5") == 2
    # one legend, with the 8 names (and the uniform reference), clear of every panel and inside the image
    assert len(fig.legends) == 1 and all(ax.get_legend() is None for ax in panels)
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()][:8] == list(PRIMITIVES)
    boxes = {ax.get_title() + f" ({n // 14})": ax.get_tightbbox(renderer) for n, ax in enumerate(panels)}
    # texts outside the panels: the cell titles, the figure title and the legend
    boxes.update({f"text {t.get_text()!r}": t.get_window_extent(renderer) for t in fig.texts})
    boxes["legend"] = legend.get_window_extent(renderer)
    for (name_a, a), (name_b, b) in itertools.combinations(boxes.items(), 2):
        assert not _overlaps(a, b, slack=1), f"{name_a} and {name_b} overlap"
    for name, b in boxes.items():
        assert b.x0 >= 0 and b.y0 >= 0 and b.x1 <= fig.bbox.x1 and b.y1 <= fig.bbox.y1, f"{name} is cut off"
    # the same candidate has the same colour in every panel
    assert len({tuple(line.get_color() for line in ax.get_lines()[:8]) for ax in panels}) == 1


@pytest.mark.parametrize(
    "history, message",
    [
        ([], r"history: expected a non-empty list of per-epoch dicts, got list of length 0"),
        ({"normal_alpha": []}, r"history: expected a non-empty list of per-epoch dicts, got dict"),
        ([{"normal_alpha": [[0.125] * 8] * 14}], r"history\[0\]: expected a dict with 'reduce_alpha'"),
        ([{"normal_alpha": [[0.125] * 8] * 13, "reduce_alpha": [[0.125] * 8] * 14}],
         r"history\[0\]\['normal_alpha'\]: expected a 14 x K nested list .* got 13 x 8"),
        ([{"normal_alpha": [[0.125] * 8] * 14, "reduce_alpha": [[0.125] * 8] * 13 + [[0.5] * 2]}],
         r"history\[0\]\['reduce_alpha'\]: .* got 14 x rows of lengths \[2, 8\]"),
    ],
    ids=["empty", "dict", "missing_key", "13_edges", "ragged"],
)
def test_plot_alphas_bad_history(tmp_path, history, message):
    with pytest.raises(ValueError, match=message):
        plot_alphas(history, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


# ---------------------------------------------------------------------------------------------------- cells


def _cell_texts(fig):
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    (ax,) = fig.get_axes()
    labels = [t for t in ax.texts if t.get_bbox_patch() is not None]  # op labels have a box
    circles = [p for p in ax.patches if isinstance(p, Circle)]
    return renderer, ax, labels, circles


@pytest.mark.parametrize("cell", [DARTS_V2_NORMAL, FULL_CELL], ids=["8_entries", "14_entries"])
def test_plot_cell_writes_png(tmp_path, cell):
    path = plot_cell(cell, tmp_path / "cell.png", title="normal cell")
    size, width, height = _png_size(path)
    assert size > 20_000 and width > 1000 and height > 300


@pytest.mark.parametrize("cell", [DARTS_V2_NORMAL, FULL_CELL], ids=["8_entries", "14_entries"])
def test_cell_labels_do_not_collide(cell):
    renderer, ax, labels, circles = _cell_texts(cell_figure(cell, title="a title"))
    live = {(op, j, n) for n, (op, j) in enumerate(cell) if op != "none"}
    assert len(labels) == len(live)
    assert sorted(t.get_text() for t in labels) == sorted(op for op, _, _ in live)
    boxes = [t.get_bbox_patch().get_window_extent(renderer) for t in labels]
    for (a, ta), (b, tb) in itertools.combinations(zip(boxes, labels), 2):
        assert not _overlaps(a, b), f"labels {ta.get_text()!r} and {tb.get_text()!r} overlap"
    assert len(circles) == 7  # c_{k-2}, c_{k-1}, 0..3, c_{k}
    for box, t in zip(boxes, labels):
        for c in circles:
            assert not _overlaps(box, c.get_window_extent(renderer)), f"label {t.get_text()!r} covers a node"
    fig_box = ax.figure.bbox
    for t in ax.texts:  # every text, the title and the note included, is inside the image
        b = t.get_window_extent(renderer)
        assert b.x0 >= fig_box.x0 and b.x1 <= fig_box.x1 and b.y0 >= fig_box.y0 and b.y1 <= fig_box.y1, \
            f"text {t.get_text()!r} is cut off"


def test_plot_cell_dead_node(tmp_path):
    # the second intermediate node's two inputs are both `none`: it is still drawn, greyed, and named in the note
    # by its number in the genotype (3: inputs 0 and 1 are c_{k-2} and c_{k-1})
    cell = list(DARTS_V2_NORMAL)
    cell[2], cell[3] = ("none", 0), ("none", 1)
    path = plot_cell(cell, tmp_path / "dead.png", title="a dead node")
    assert _png_size(path)[0] > 20_000
    renderer, ax, labels, circles = _cell_texts(cell_figure(cell))
    assert len(labels) == 6
    node_labels = {t.get_text(): t for t in ax.texts if t.get_bbox_patch() is None}
    assert set(node_labels) >= {"2", "3", "4", "5"} and "0" not in node_labels and "1" not in node_labels
    assert node_labels["3"].get_color() != node_labels["2"].get_color()
    greyed = [c for c in circles if c.get_linestyle() != "-"]
    assert len(greyed) == 1 and greyed[0].center[0] == pytest.approx(circles[3].center[0])
    assert any("greyed node 3: no live input" in t.get_text() for t in ax.texts)


def test_plot_cell_14_entries_with_dead_node(tmp_path):
    cell = list(FULL_CELL)
    for n in (2, 3, 4):  # the three inputs of node 3 (the second intermediate node)
        cell[n] = ("none", cell[n][1])
    path = plot_cell(cell, tmp_path / "dead14.png")
    assert _png_size(path)[0] > 20_000
    _, ax, labels, _ = _cell_texts(cell_figure(cell))
    assert len(labels) == 11


def test_plot_cell_duplicate_edge_is_one_label():
    cell = list(DARTS_V2_NORMAL)
    cell[0], cell[1] = ("sep_conv_3x3", 0), ("dil_conv_5x5", 0)  # node 2 takes c_{k-2} twice
    _, _, labels, _ = _cell_texts(cell_figure(cell))
    assert "sep_conv_3x3\ndil_conv_5x5" in [t.get_text() for t in labels]


@pytest.mark.parametrize(
    "cell, message",
    [
        (DARTS_V2_NORMAL[:5], r"cell: expected 8 .* or 14 \(every edge\), got 5"),
        (DARTS_V2_NORMAL[:7] + [("skip_connect", 5)], r"cell\[7\]: expected input_node in \[0, 5\) for intermediate "
                                                      r"node 3, got 5"),
        ([("sep_conv_3x3", 2)] + DARTS_V2_NORMAL[1:], r"cell\[0\]: expected input_node in \[0, 2\) for intermediate "
                                                      r"node 0, got 2"),
        ([("sep_conv_3x3", "a")] + DARTS_V2_NORMAL[1:], r"cell\[0\]: expected input_node .* got 'a'"),
        ([("sep_conv_3x3",)] + DARTS_V2_NORMAL[1:], r"cell\[0\]: expected an \(op_name: str, input_node: int\) pair"),
        (3, r"cell: expected a list of \(op_name, input_node\) pairs, got int"),
    ],
    ids=["length", "node3_input", "node0_input", "non_int", "short_pair", "not_a_list"],
)
def test_plot_cell_bad_cell(tmp_path, cell, message):
    with pytest.raises(ValueError, match=message):
        plot_cell(cell, tmp_path / "x.png", title="t")


# ---------------------------------------------------------------------------------------------------- curves


def _metrics(epochs: int):
    out = []
    for e in range(1, epochs + 1):
        m = {"epoch": e, "train_loss": 2.3 * 0.95 ** e, "val_loss": 2.3 * 0.96 ** e, "train_acc": 1 - 0.9 * 0.95 ** e,
             "val_acc": 1 - 0.9 * 0.96 ** e, "temperature": 0.97 ** e}
        if e % 5 == 0:
            m["child_val_acc"] = 1 - 0.9 * 0.97 ** e  # measured every 5 epochs only
        out.append(m)
    return out


def test_plot_curves_writes_png(tmp_path):
    path = plot_curves(_metrics(30), tmp_path / "curves.png", keys=["train_loss", "val_loss", "val_acc",
                                                                    "child_val_acc"])
    size, width, height = _png_size(path)
    assert size > 10_000 and (width, height) == (1120, 400)  # two panels: loss, accuracy


def test_plot_curves_default_keys_and_single_epoch(tmp_path):
    from snas_fast.viz.plots import curves_figure

    fig = curves_figure(_metrics(12))
    titles = [ax.get_title() for ax in fig.get_axes() if ax.axison]
    assert titles == ["loss", "accuracy", "temperature"]
    acc = fig.get_axes()[1]
    assert [line.get_label() for line in acc.get_lines()] == ["train_acc", "val_acc", "child_val_acc"]
    assert len(acc.get_lines()[2].get_xdata()) == 2  # epochs 5 and 10
    _png_size(plot_curves(_metrics(1), tmp_path / "one.png"))


def test_plot_curves_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"keys: expected keys present in metrics, got 'val_accuracy'"):
        plot_curves(_metrics(3), tmp_path / "x.png", keys=["val_accuracy"])
    with pytest.raises(ValueError, match=r"metrics: expected a non-empty list of per-epoch dicts, got list of len"):
        plot_curves([], tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"metrics\[1\]\['train_loss'\]: expected a number, got 'nan\?'"):
        plot_curves([{"train_loss": 1.0}, {"train_loss": "nan?"}], tmp_path / "x.png")


def test_no_pyplot(tmp_path):
    """The figures are drawn on their own Agg canvases: using the module never loads pyplot or switches the
    caller's backend."""
    import matplotlib

    had_pyplot = "matplotlib.pyplot" in sys.modules
    backend = matplotlib.get_backend() if had_pyplot else None
    plot_cell(DARTS_V2_NORMAL, tmp_path / "c.png")
    plot_curves(_metrics(2), tmp_path / "m.png")
    if had_pyplot:  # something else loaded it first: at least the backend must be untouched
        assert matplotlib.get_backend() == backend
    else:
        assert "matplotlib.pyplot" not in sys.modules
