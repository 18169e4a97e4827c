"""The one training loop: epochs of steps, evaluation, an atomic checkpoint and a metrics line per epoch, exact
resume, a stop on a non-finite loss, callbacks. The search (:func:`snas_fast.search.snas.search`) and the
retraining (:func:`snas_fast.engine.retrain.train`) are two :class:`Task` objects run by :func:`fit`.

The loop knows no search space, no strategy, no terminal beyond its progress bar, and no plot: plots are callbacks
(:mod:`snas_fast.viz`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._progress import bar as progress_bar
from ..data import IGNORE
from . import distributed
from .config import RunConfig, RunError
from .rundir import RunDir
from .seeds import seed_epoch

__all__ = ["Callback", "EpochEnd", "RunError", "Task", "drop_path_prob", "evaluate", "fit", "recalibrate_bn"]


def drop_path_prob(drop_path: float, epoch: int, epochs: int) -> float:
    """DARTS's linear ramp: ``drop_path * epoch / epochs`` (0 in the first epoch)."""
    return drop_path * epoch / max(epochs, 1)


def _counted(y: Tensor) -> int:
    """The targets a loss and an accuracy count: all but :data:`~snas_fast.data.IGNORE`'s."""
    return y.numel() if y.dtype.is_floating_point else int((y != IGNORE).sum())


@torch.no_grad()
def evaluate(forward: Callable[[Tensor], Tensor], model: nn.Module, loader, device) -> Tuple[float, float]:
    """(mean loss, accuracy) of ``forward(x) -> logits [B, classes]`` on ``loader``, ``model`` in eval mode; targets
    :data:`~snas_fast.data.IGNORE` count for neither (a graph's nodes outside the scored part).

    With a process group each rank evaluates its share (``loader``'s sampler) and the sums are added over the
    ranks: every rank returns the figures of the whole set."""
    model.eval()
    total, correct, loss_sum = 0, 0, 0.0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits = forward(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum", ignore_index=IGNORE).item()
        correct += (logits.argmax(1) == y).sum().item()
        total += _counted(y)
    loss_sum, correct, total = distributed.all_reduce_sum([loss_sum, correct, total])
    return loss_sum / max(total, 1), correct / max(total, 1)


@torch.no_grad()
def recalibrate_bn(forward: Callable[[Tensor], Tensor], model: nn.Module, loader, batches: int, device) -> None:
    """Re-estimates every BatchNorm's running statistics of ``model`` (reset, then a cumulative average) on
    ``batches`` training batches run through ``forward`` in training mode."""
    for bn in (m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)):
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average
    model.train()
    for i, (x, _) in enumerate(loader):
        if i >= batches:
            break
        forward(x.to(device))


class Task:
    """What a run trains and how; :func:`fit` runs it. Attributes the loop reads: ``config`` (a
    :class:`~snas_fast.engine.config.RunConfig`), ``ctx`` (:class:`~snas_fast.engine.distributed.Context`),
    ``model`` (the unwrapped module), ``train_loader`` (a DistributedSampler loader), ``optimizer`` (what the
    default :meth:`update` steps), ``bar_columns`` (columns of :meth:`begin_epoch` shown on the progress bar),
    ``nan_hint`` (advice when the loss is not finite)."""

    bar_columns: Sequence[str] = ()
    nan_hint = "lower the learning rate"

    def legend(self) -> str:
        """What the console's columns mean, printed once before the first epoch line ("" for nothing)."""
        return ""

    def state_dict(self) -> dict:
        """What the checkpoint keeps besides ``epoch`` and ``config``: by default ``model``, ``optimizer`` and, where
        the task has one, ``schedule``; a task with more (a second optimiser, a history) extends it."""
        state = dict(model=self.model.state_dict(), optimizer=self.optimizer.state_dict())
        if getattr(self, "schedule", None) is not None:
            state["schedule"] = self.schedule.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        """The inverse of :meth:`state_dict`."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if "schedule" in state:
            self.schedule.load_state_dict(state["schedule"])

    def begin_epoch(self, epoch: int) -> Dict[str, float]:
        """Sets the epoch up (temperature, drop-path, ...); returns its columns of the metrics row."""
        return {}

    def loss(self, x: Tensor, y: Tensor, epoch: int, step: int) -> Tuple[Tensor, Tensor, Dict[str, Tensor]]:
        """``(loss, logits, extras)`` of one batch; ``extras``: scalars averaged over the epoch into the row."""
        raise NotImplementedError

    def update(self, loss: Tensor, epoch: int) -> None:
        """The backward pass and the optimiser steps of one batch; by default ``loss.backward()``, the gradient norm
        of :meth:`clipped_parameters` clipped at ``config.grad_clip``, ``self.optimizer.step()``."""
        loss.backward()
        nn.utils.clip_grad_norm_(self.clipped_parameters(), self.config.grad_clip)
        self.optimizer.step()

    def clipped_parameters(self):
        """The parameters whose gradient norm :meth:`update` clips (default: all of ``model``'s)."""
        return self.model.parameters()

    def end_epoch(self, epoch: int) -> Dict[str, object]:
        """After the epoch's steps (schedules, evaluation); returns the rest of the metrics row."""
        return {}

    def describe(self, row: dict) -> str:
        """The epoch's console line."""
        return f"train_acc {row['train_acc']:.3f}"

    def should_stop(self, row: dict) -> bool:
        """Whether the run ends after the epoch of ``row`` (early stopping), its row and checkpoint written."""
        return False


@dataclass
class EpochEnd:
    """What a callback receives after an epoch's row and checkpoint are written (on the main process only).
    ``epoch`` counts from 0 (the loop's index); ``row["epoch"]``, what users see, from 1."""

    epoch: int
    row: dict
    run: RunDir
    task: Task


Callback = Callable[[EpochEnd], None]


def _train_epoch(task: Task, epoch: int, head: Dict[str, float], progress: bool) -> Dict[str, float]:
    config, device = task.config, task.ctx.device
    seen, correct, loss_sum, extra_sums = 0, 0, 0.0, {}
    start = time.perf_counter()
    bar = progress_bar(task.train_loader, f"epoch {epoch + 1}/{config.epochs}", progress, dynamic_ncols=True)
    for step, (x, y) in enumerate(bar):
        x, y = x.to(device), y.to(device)
        loss, logits, extras = task.loss(x, y, epoch, step)
        if not torch.isfinite(loss):
            raise task.config.Error(f"the loss became {loss.item()} at epoch {epoch + 1}: the run stops; the "
                                    f"checkpoint of the last finished epoch is intact ({task.nan_hint})")
        task.update(loss, epoch)
        n = _counted(y)
        seen += n
        loss_sum += loss.item() * n
        for k, v in extras.items():
            extra_sums[k] = extra_sums.get(k, 0.0) + float(v) * n
        correct += (logits.argmax(1) == y).sum().item()
        bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}",
                        **{k: f"{head[k]:.3f}" for k in task.bar_columns},
                        img_s=f"{seen / max(time.perf_counter() - start, 1e-9):.0f}")
    elapsed = time.perf_counter() - start
    names = list(extra_sums)
    seen, correct, loss_sum, *sums = distributed.all_reduce_sum([seen, correct, loss_sum] + [extra_sums[k]
                                                                                           for k in names])
    return dict(train_loss=loss_sum / max(seen, 1), train_acc=correct / max(seen, 1),
                **{k: v / max(seen, 1) for k, v in zip(names, sums)}, images_per_s=seen / max(elapsed, 1e-9),
                epoch_s=elapsed)


def fit(task: Task, resume: bool = False, progress: bool = True, callbacks: Sequence[Callback] = (),
        on_start: Optional[Callable[[RunDir], None]] = None) -> List[dict]:
    """Runs ``task`` for ``task.config.epochs`` epochs in the run directory ``task.config.out``, or, with
    ``resume``, continues it from its checkpoint. Returns the metrics rows of every epoch.

    Every epoch: seeds from (seed, epoch, rank) (:func:`~snas_fast.engine.seeds.seed_epoch`), the loader's epoch,
    the task's steps (a non-finite loss raises ``config.Error`` before the step is applied), then on the main process
    the metrics line, the checkpoint (atomic) and the ``callbacks``; the run ends early when
    :meth:`Task.should_stop` says so. ``on_start(run)`` writes a fresh run's own files (after ``config.json``).
    """
    config: RunConfig = task.config
    ctx = task.ctx
    run = RunDir(config.out, ctx)
    run.clean_temporaries()
    start_epoch = 0
    state = None
    if not resume and not getattr(config, "overwrite", False) and run.holds_run():
        raise config.Error(f"out: {config.out} holds a run already; continue it with --resume {config.out}, or "
                           f"give --overwrite true to start again there")
    if resume:
        state, problem = run.load_checkpoint()
        if problem:
            raise config.Error(f"out: cannot resume {config.out}: {problem}")
    if state is not None:
        task.load_state_dict(state)
        start_epoch = state["epoch"] + 1
        try:
            run.truncate_metrics(start_epoch)
        except ValueError as error:  # a damaged history: say so in one line, change nothing
            raise config.Error(f"out: cannot resume {config.out}: {error}") from None
    else:
        try:
            run.start(config.to_dict())
        except OSError as error:  # a place the permission check cannot see: a read-only mount, /proc, a full disk
            raise config.Error(f"out: cannot write {config.out} ({error.strerror or error})") from None
        if on_start is not None and ctx.is_main:
            on_start(run)

    rows: List[dict] = []
    if progress and ctx.is_main and task.legend() and start_epoch < config.epochs:
        print(task.legend(), flush=True)
    for epoch in range(start_epoch, config.epochs):
        seed_epoch(config.seed, epoch, ctx.rank)
        # the data order of an epoch depends on (seed, epoch) alone, so a resumed run sees the same batches
        task.train_loader.sampler.set_epoch(epoch)
        head = task.begin_epoch(epoch)
        stats = _train_epoch(task, epoch, head, progress and ctx.is_main)
        row = dict(epoch=epoch + 1, **head, **stats, **task.end_epoch(epoch))  # 1-based, as on the console
        rows.append(row)
        run.append_metrics(row)
        run.save_checkpoint(dict(task.state_dict(), epoch=epoch, config=config.to_dict()))
        if ctx.is_main:
            for callback in callbacks:
                callback(EpochEnd(epoch, row, run, task))
            if progress:
                print(f"epoch {epoch + 1}/{config.epochs}: {task.describe(row)}", flush=True)
        if task.should_stop(row):
            break
    return run.metrics() if ctx.is_main else rows

