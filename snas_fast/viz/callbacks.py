"""Plots as callbacks of the training loop (:func:`snas_fast.engine.loop.fit`): each takes the
:class:`~snas_fast.engine.loop.EpochEnd` of an epoch and rewrites its figures in the run directory."""
from __future__ import annotations

from ..engine.loop import EpochEnd
from ..search import convergence
from . import plots

__all__ = ["morph_plots", "search_plots", "train_plots"]

_CURVES = ["train_loss", "val_loss", "train_acc", "val_acc", "child_val_acc"]


def search_plots(end: EpochEnd) -> None:
    """The figures of a one-shot search (SNAS, DARTS) on its space: on DARTS's, ``alphas.png`` (softmax(log_alpha)
    over the epochs, titled with the convergence figures), ``cell_normal.png`` and ``cell_reduce.png`` (the current
    derivation); on the graph space its own (:func:`snas_fast.viz.gnn.gnn_search_plots`); ``curves.png`` always."""
    from ..spaces.darts import DartsSpace
    from ..spaces.gnn import GnnSpace

    task = end.task
    space = task.space
    if isinstance(space, GnnSpace):
        from .gnn import gnn_search_plots

        gnn_search_plots(end)
        return
    if isinstance(space, DartsSpace):
        genotype = space.derive(task.model)
        title = convergence.summary(task.arch, len(space.primitives), sep="\n")
        plots.plot_alphas(task.history, end.run.path("alphas.png"), title=title, space=space)
        plots.plot_cell(genotype.normal, end.run.path("cell_normal.png"), "normal cell", space=space)
        plots.plot_cell(genotype.reduce, end.run.path("cell_reduce.png"), "reduction cell", space=space)
    plots.plot_curves(end.run.metrics(), end.run.path("curves.png"), keys=_CURVES)


def train_plots(end: EpochEnd) -> None:
    """``curves.png`` of a retraining."""
    plots.plot_curves(end.run.metrics(), end.run.path("curves.png"),
                      keys=["train_loss", "test_loss", "train_acc", "test_acc"])


def morph_plots(out: str, rows) -> None:
    """``search_tree.png`` of a morphism search (:mod:`snas_fast.search.morph`), after every trained network."""
    import os

    plots.plot_morph_tree(rows, os.path.join(out, "search_tree.png"))
