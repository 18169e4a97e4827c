"""``snas-fast latency-table``: the measured latency of every candidate on every edge of one network
(:mod:`snas_fast.spaces.darts.latency`), and how well it predicts whole children.

Writes ``out`` (the table, JSON: its network shape, device, torch version, threads, date) and, with ``check > 0``,
``<out>.check.json``: ``check`` random children (top-2 form) timed end to end against the table's prediction, with
Pearson's r (scipy) and the mean absolute percentage error. On the CPU the process is pinned to ``threads`` CPUs
and torch to ``threads`` threads, as ``bench/harness.py`` does, so the figures are those of that many cores.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from .engine.config import RunConfig, RunError, setting
from .engine.rundir import write_json_atomic
from .engine.seeds import make_generator
from .spaces import get_space

__all__ = ["LatencyConfig", "LatencyError", "latency_table"]


class LatencyError(RunError):
    """A latency table that cannot be measured (bad setting); one-line message."""


@dataclass
class LatencyConfig(RunConfig):
    """The network (``channels``, ``layers``, ``size``, ``in_channels``, ``num_classes``), the batch and the
    timing (``repeats`` after ``warmup``, ``threads``)."""

    Error = LatencyError
    out_is_file = True
    hidden = ("overwrite",)  # the table file is written anew

    out: str = setting("latency_table.json", "the table's JSON file")
    space: str = setting("darts", "a DARTS-family search space (darts, or one registered with other primitives)")
    channels: int = setting(8, "channels of the first cells (C)")
    layers: int = setting(5, "cells in the network")
    size: int = setting(8, "input height and width (the digits: 8)")
    in_channels: int = setting(1, "input channels (the digits: 1)")
    num_classes: int = setting(10, "classes")
    batch_size: int = setting(32, "batch of every timed call")
    repeats: int = setting(20, "timed calls per entry (the median is kept)")
    warmup: int = setting(3, "untimed calls first")
    threads: int = setting(1, "CPU threads (the process is pinned to as many CPUs)")
    check: int = setting(20, "random children timed end to end against the prediction (0: none)")

    def validate(self) -> None:
        from .spaces import space_names
        from .spaces.darts import DartsSpace

        super().validate()
        if self.space not in space_names():
            raise LatencyError(f"space: expected one of {', '.join(space_names())}, got {self.space!r}")
        if not isinstance(get_space(self.space), DartsSpace):
            raise LatencyError(f"space: latency tables time the DARTS space's edges; {self.space} is not a DARTS "
                               f"space")
        self.check_ints(("channels", "layers", "batch_size", "size", "in_channels", "num_classes", "repeats",
                         "threads"), 1)
        self.check_ints(("warmup", "check"), 0)


def _pin(threads: int) -> None:
    if hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))[:threads]
        os.sched_setaffinity(0, cpus)
    torch.set_num_threads(threads)


def latency_table(config: LatencyConfig, progress: bool = True):
    """Measures and writes the table (and its check); returns ``(table, check or None)``."""
    from scipy import stats

    from .spaces.darts.latency import measure, network_ms

    config.validate()
    space = get_space(config.space)
    if config.device == "cpu":
        _pin(config.threads)
    shape = dict(C=config.channels, layers=config.layers, size=config.size, in_channels=config.in_channels,
                 num_classes=config.num_classes, batch=config.batch_size, device=config.device)
    timing = dict(repeats=config.repeats, warmup=config.warmup, space=space)
    table = measure(**shape, **timing, progress=progress)
    os.makedirs(os.path.dirname(os.path.abspath(config.out)), exist_ok=True)
    table.save(config.out)
    if config.check == 0:
        return table, None
    gen = make_generator(config.seed, 0x6C617463)  # "latc"
    rows = []
    for _ in range(config.check):
        g = space.random_genotype(gen)
        measured = network_ms(g, config.channels, config.layers, config.size, config.in_channels,
                              config.num_classes, config.batch_size, config.device, **timing)
        rows.append(dict(genotype=g.to_dict(), predicted_ms=table.predict(g, space), measured_ms=measured))
    predicted = [r["predicted_ms"] for r in rows]
    measured = [r["measured_ms"] for r in rows]
    check = dict(children=len(rows), pearson_r=float(stats.pearsonr(predicted, measured)[0]),
                 mape=float(sum(abs(p - m) / m for p, m in zip(predicted, measured)) / len(rows)),
                 device=table.device, threads=table.threads, date=table.date, rows=rows)
    write_json_atomic(check, f"{os.path.splitext(config.out)[0]}.check.json")
    return table, check
