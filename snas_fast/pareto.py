"""``snas-fast pareto``: the accuracy-cost front of SNAS (a sweep of its penalty weight lambda), MONAS (a sweep of
its reward's accuracy weight ``a``) and random sampling, every architecture retrained with one recipe.

Each setting is a cell of :func:`snas_fast.compare.run_units` (``<method>@<setting>``: its own run directories,
kept, ``--resume``, taken from one queue by torchrun's ranks); a random point is a genotype drawn uniformly and
retrained. The cost of an architecture is its ``objective`` (params, FLOPs, MAC of its edges, or latency predicted
by a measured table) in the search network (``search_channels``, ``search_layers``): the units SNAS's penalty and
MONAS's reward see.
Written to ``out``:

    pareto.csv   method, setting, seed, test accuracy, cost, on_front (of its method), params, FLOPs, genotype
    pareto.md    each method's points and hypervolume against one shared reference point
    pareto.png   accuracy against cost, each method's front as a step line, dominated points faint

The hypervolume of a method is the area its points dominate (higher accuracy, lower cost) up to the reference
point: the nadir of all methods' points (the largest cost and the lowest accuracy seen), the same for every method.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from .compare import CompareConfig, CompareError, retrain_row, run_cell, run_units
from .engine import distributed
from .engine.config import setting
from .engine.seeds import make_generator
from .search.monas import OBJECTIVES

__all__ = ["ParetoConfig", "hypervolume", "non_dominated", "pareto"]

FIELDS = ["method", "setting", "seed", "test_acc", "cost", "on_front", "params", "flops", "search_s", "genotype"]


def non_dominated(points: Sequence[Tuple[float, float]]) -> List[bool]:
    """For each ``(cost, accuracy)``: whether no other point is at least as good in both and better in one (lower
    cost, higher accuracy). Equal points are all on the front."""
    best_at: Dict[float, float] = {}  # the best accuracy at each cost
    for c, a in points:
        best_at[c] = max(a, best_at.get(c, -math.inf))
    best_below, below = {}, -math.inf  # the best accuracy at any lower cost
    for c in sorted(best_at):
        best_below[c] = below
        below = max(below, best_at[c])
    return [not (best_below[c] >= a or best_at[c] > a) for c, a in points]


def hypervolume(points: Sequence[Tuple[float, float]], ref: Tuple[float, float]) -> float:
    """The area of ``{(c, a): c <= ref_cost, a >= ref_acc, and some point has cost <= c and accuracy >= a}``:
    what ``(cost, accuracy)`` points dominate up to ``ref = (ref_cost, ref_acc)``. Points beyond the reference
    add nothing."""
    ref_c, ref_a = ref
    front = sorted({(c, a) for (c, a), on in zip(points, non_dominated(points)) if on and c <= ref_c and a >= ref_a})
    area, floor = 0.0, ref_a
    for c, a in front:  # cost ascending: accuracy ascending along a front
        area += (ref_c - c) * (a - floor)
        floor = a
    return area


@dataclass
class ParetoConfig(CompareConfig):
    """The sweeps, the objective, and the comparison's budget and retraining recipe."""

    out: str = setting("runs/pareto", "run directory")
    strategies: str = setting("snas,monas,random", "methods on the front: snas, monas, random")
    seeds: int = setting(1, "seeds per setting")
    objective: str = setting("mac", "the cost: params, flops, mac (of the edges) or latency (--latency-table)",
                             choices=OBJECTIVES)
    lambdas: str = setting("0,0.0015,0.005,0.02", "SNAS: the penalty weights lambda")
    mixes: str = setting("1.0,0.9,0.7,0.5", "MONAS (mixed reward): the accuracy weights a")
    random_points: int = setting(6, "random genotypes retrained as they are")
    search_channels: int = setting(8, "channels of the search network (the cost's network)")
    search_layers: int = setting(5, "cells of the search network (the cost's network)")

    def validate(self) -> None:
        methods = set(self.names())
        if not methods or not methods <= {"snas", "monas", "random"}:
            raise CompareError(f"strategies: expected a comma-separated subset of snas, monas, random, got "
                               f"{self.strategies!r}")
        for name in ("lambdas", "mixes"):
            try:
                values = self.values(name)
            except ValueError:
                values = None
            if not values or any(not math.isfinite(v) or v < 0 for v in values) or (
                    name == "mixes" and max(values) > 1):
                raise CompareError(f"{name}: expected comma-separated numbers >= 0{' and <= 1' * (name == 'mixes')}"
                                   f", got {getattr(self, name)!r}")
        super().validate()
        self.check_ints(("random_points",), 0)
        self.check_ints(("search_channels", "search_layers"), 1)
        if self.objective == "latency" and not self.latency_table:
            raise CompareError("latency_table: objective latency needs a table (snas-fast latency-table)")

    def values(self, name: str) -> List[float]:
        return [float(v) for v in str(getattr(self, name)).split(",") if v.strip()]

    def settings(self) -> Dict[str, Tuple[str, dict]]:
        """Every cell label with its method and the settings it changes."""
        shape = dict(layers=self.search_layers, channels=self.search_channels)
        cells: Dict[str, Tuple[str, dict]] = {}
        if "snas" in self.names():
            for lam in self.values("lambdas"):
                cells[f"snas@lambda={lam:g}"] = ("snas", dict(shape, resource_lambda=lam))
        if "monas" in self.names():
            for a in self.values("mixes"):
                cells[f"monas@a={a:g}"] = ("monas", dict(shape, a=a, objective=self.objective))
        if "random" in self.names():
            for k in range(self.random_points):
                cells[f"random@{k}"] = ("random", {})
        return cells


def pareto(config: ParetoConfig, resume: bool = False, progress: bool = True) -> List[dict]:
    """Runs every setting (:meth:`ParetoConfig.settings`), then writes ``pareto.csv``, ``pareto.md``,
    ``pareto.png``; returns the rows (on every rank)."""
    from .search.monas import CostModel, MonasError, objective_of

    config.validate()
    cells = config.settings()
    info = config.load_data()[2]
    # the cost's network: the search network's size
    space = config.space_object().configure(dataclasses.replace(config, layers=config.search_layers,
                                                                channels=config.search_channels), info)
    try:  # before the sweep: a cost the space does not count is refused now, not after every cell has run
        cost = CostModel(objective_of(config, space), space)
    except MonasError as error:
        raise CompareError(str(error)) from None

    def run(label: str, seed: int, previous: Optional[dict]) -> dict:
        method, overrides = cells[label]
        if method == "random":  # a point drawn from the space's prior, retrained as it is
            k = int(label.partition("@")[2])
            g = space.sample(make_generator(seed, k, 0x70617265))  # "pare"
            out = os.path.join(config.out, label, f"seed{seed}", "train")
            return dict(retrain_row(config, seed, g, out), strategy=label, search_s=0.0, score=math.nan)
        return run_cell(config, label, seed, overrides)

    units = [[(label, seed)] for label in cells for seed in range(config.seeds)]
    rows = run_units(config, units, run, resume, progress)
    out_rows = []
    for row in rows:
        method, _, set_to = row["strategy"].partition("@")
        g = space.from_dict(json.loads(row["genotype"]))
        out_rows.append(dict(method=method, setting=set_to, seed=row["seed"], test_acc=row["test_acc"],
                             cost=cost(g), params=row["params"], flops=row["flops"], search_s=row["search_s"],
                             genotype=row["genotype"]))
    for method in {r["method"] for r in out_rows}:
        mine = [r for r in out_rows if r["method"] == method]
        for r, on in zip(mine, non_dominated([(r["cost"], r["test_acc"]) for r in mine])):
            r["on_front"] = on
    if distributed.context(config.device).is_main:
        write_front(out_rows, config)
    return out_rows


def write_front(rows: List[dict], config: ParetoConfig) -> Dict[str, float]:
    """``pareto.csv``, ``pareto.md`` and ``pareto.png`` of ``rows``; returns each method's hypervolume."""
    from .viz import plots

    with open(os.path.join(config.out, "pareto.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    points = [(r["cost"], r["test_acc"]) for r in rows]
    ref = (max(c for c, _ in points), min(a for _, a in points))
    methods = sorted({r["method"] for r in rows})
    volumes = {m: hypervolume([(r["cost"], r["test_acc"]) for r in rows if r["method"] == m], ref) for m in methods}
    lines = [f"Objective: {config.objective} of the edges in the search network ({config.search_layers} cells, "
             f"C = {config.search_channels}); reference point: cost {ref[0]:.6g}, accuracy {ref[1]:.4f} (the nadir "
             f"of all points).", "", "| method | points | on its front | hypervolume |", "|---|---:|---:|---:|"]
    for m in sorted(methods, key=lambda m: -volumes[m]):
        mine = [r for r in rows if r["method"] == m]
        lines.append(f"| {m} | {len(mine)} | {sum(r['on_front'] for r in mine)} | {volumes[m]:.6g} |")
    lines += ["", "| method | setting | seed | test accuracy | cost | on its front | params |",
              "|---|---|---:|---:|---:|---|---:|"]
    for r in sorted(rows, key=lambda r: (r["method"], r["cost"])):
        lines.append(f"| {r['method']} | {r['setting']} | {r['seed']} | {r['test_acc']:.4f} | {r['cost']:.6g} | "
                     f"{'yes' if r['on_front'] else ''} | {r['params']:,} |")
    with open(os.path.join(config.out, "pareto.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    plots.plot_pareto({m: [(r["cost"], r["test_acc"], r["on_front"]) for r in rows if r["method"] == m]
                       for m in methods}, os.path.join(config.out, "pareto.png"),
                      f"{config.objective} (search network)",
                      "test accuracy")
    return volumes
