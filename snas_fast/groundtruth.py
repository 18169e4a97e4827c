"""``snas-fast groundtruth``: a ground-truth sample of a space. ``archs`` architectures drawn uniformly from the
space's prior (:meth:`SearchSpace.sample <snas_fast.spaces.SearchSpace.sample>`, by ``--seed``) are each trained from
scratch by the retraining recipe (:func:`snas_fast.engine.retrain.train`, the recipe of ``snas-fast train`` and of
``snas-fast compare``) and measured on the test part, the first ``seeded_archs`` of them at every one of ``seeds``
seeds (the seed noise of the reference itself), the others at seed 0. A comparison's rows and a proxy's ranking
(``snas-fast rank --groundtruth``) are then placed against it.

Written to ``out``:

    cells/arch<k>-seed<s>.json   one finished training (kept: --resume skips it)
    arch<k>/seed<s>/             its run directory
    groundtruth.csv              one row per training: arch, seed, test_acc, params, flops, seconds, genotype;
                                 ``# key: value`` lines first (the command, date, torch version, recipe)
    groundtruth.md               the distribution: quantiles, the spread over seeds, the best and worst

Under ``torchrun`` the ranks (one thread each) take the trainings from one queue, as ``snas-fast compare`` takes
its cells (:func:`snas_fast.compare.run_units`).
"""
from __future__ import annotations

import csv
import datetime
import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from .engine.config import RunError, TrainingConfig, setting
from .engine.retrain import TrainConfig, retrain_defaults

__all__ = ["FIELDS", "GroundTruthConfig", "GroundTruthError", "groundtruth", "percentile", "read_groundtruth",
           "sample_archs"]

FIELDS = ["arch", "seed", "test_acc", "params", "flops", "seconds", "genotype"]
_DRAW_STREAM = 0x67726E64  # "grnd": the architectures' draw, apart from every other use of the seed


class GroundTruthError(RunError):
    """A ground-truth sample that cannot start (bad setting, unreadable file); one-line message."""


@dataclass
class GroundTruthConfig(TrainingConfig):
    """How many architectures, how many seeds, and the retraining recipe (``epochs``, ``layers``, ``channels``, ...
    of :class:`~snas_fast.engine.retrain.TrainConfig`; None: the recipe's for the space)."""

    Error = GroundTruthError
    roles = ("child",)
    data_parallel = False  # whole trainings per rank

    out: str = setting("runs/groundtruth", "run directory")
    archs: int = setting(100, "architectures drawn uniformly from the space (by --seed) and trained")
    seeds: int = setting(1, "training seeds (0 .. seeds - 1) of the first --seeded-archs architectures")
    seeded_archs: Optional[int] = setting(None, "how many of the architectures train at every seed (the others at "
                                                "seed 0; default: all)", kind=int)
    epochs: Optional[int] = setting(None, "training epochs (default: the retraining recipe's)", kind=int)
    drop_path: Optional[float] = setting(None, "drop-path (default: the retraining recipe's)", kind=float)

    def default_sources(self):
        return [retrain_defaults(self)] + super().default_sources()

    def validate(self) -> None:
        super().validate()
        self.check_ints(("archs", "seeds"), 1)
        if self.seeded_archs is not None:
            self.check_ints(("seeded_archs",), 0)
            if self.seeded_archs > self.archs:
                raise GroundTruthError(f"seeded_archs: expected at most --archs ({self.archs}), got "
                                       f"{self.seeded_archs}")
        space = self.space_object()
        for capability in ("sample", "child"):
            lacks = space.lacks(capability)
            if lacks:
                raise GroundTruthError(f"space: {self.space} {lacks}: no ground truth to train")

    def train_config(self, seed: int, out: str) -> TrainConfig:
        return self.carried_to(TrainConfig, seed=seed, out=out, genotype="groundtruth", overwrite=True)

    def units(self) -> List[Tuple[int, int]]:
        """``(arch, seed)`` of every training, the seeded architectures' seeds first."""
        seeded = self.archs if self.seeded_archs is None else self.seeded_archs
        return ([(k, s) for s in range(self.seeds) for k in range(seeded)]
                + [(k, 0) for k in range(seeded, self.archs)])


def sample_archs(space, n: int, seed: int) -> list:
    """The ``n`` architectures of a ground-truth sample of ``seed``: ``space``'s prior, drawn in order from one
    generator (the same ``n``, ``seed`` and space give the same list; a longer list starts with a shorter one)."""
    from .engine.seeds import make_generator

    generator = make_generator(seed, _DRAW_STREAM)
    return [space.sample(generator) for _ in range(n)]


def percentile(value: float, sample: Sequence[float]) -> float:
    """The percentage of ``sample`` below ``value``, ties counted half (scipy's ``percentileofscore``, kind
    ``"mean"``); NaN for an empty sample or a NaN value."""
    from scipy import stats

    values = [v for v in sample if math.isfinite(v)]
    if not values or not math.isfinite(value):
        return math.nan
    return float(stats.percentileofscore(values, value, kind="mean"))


def read_groundtruth(path: str) -> Tuple[Dict[str, str], List[dict]]:
    """``(header, rows)`` of a ground-truth CSV: its ``# key: value`` lines and its rows (``arch``, ``seed`` ints;
    ``test_acc``, ``params``, ``flops``, ``seconds`` floats; ``genotype`` the architecture's JSON object). Nothing in
    the file is run. :class:`GroundTruthError`, one line naming the file and the line, for anything else."""
    header: Dict[str, str] = {}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise GroundTruthError(f"groundtruth: cannot read {path} ({error})") from None
    body = []
    for line in lines:
        if line.startswith("#"):
            key, _, value = line[1:].partition(":")
            header[key.strip()] = value.strip()
        elif line.strip():
            body.append(line)
    reader = csv.DictReader(body)
    if reader.fieldnames is None or [f for f in FIELDS if f not in reader.fieldnames]:
        raise GroundTruthError(f"groundtruth: {path}: expected the columns {', '.join(FIELDS)}, got "
                               f"{', '.join(reader.fieldnames or []) or 'none'}")
    rows = []
    for n, raw in enumerate(reader, start=2):
        try:
            row = dict(arch=int(raw["arch"]), seed=int(raw["seed"]), genotype=json.loads(raw["genotype"]),
                       **{k: float(raw[k]) for k in ("test_acc", "params", "flops", "seconds")})
        except (TypeError, ValueError) as error:
            raise GroundTruthError(f"groundtruth: {path}: data row {n - 1}: {' '.join(str(error).split())}") from None
        if not isinstance(row["genotype"], dict):
            raise GroundTruthError(f"groundtruth: {path}: data row {n - 1}: genotype: expected a JSON object")
        rows.append(row)
    if not rows:
        raise GroundTruthError(f"groundtruth: {path}: no rows")
    return header, rows


def arch_means(rows: Sequence[dict]) -> List[dict]:
    """One row per architecture of ground-truth ``rows``: its genotype, ``test_acc`` the mean over its seeds,
    ``seeds`` their number, in the order of the architectures."""
    by: Dict[int, List[dict]] = {}
    for row in rows:
        by.setdefault(row["arch"], []).append(row)
    return [dict(arch=k, genotype=rs[0]["genotype"], test_acc=statistics.mean(r["test_acc"] for r in rs),
                 seeds=len(rs), params=rs[0]["params"]) for k, rs in sorted(by.items())]


def _header(config: GroundTruthConfig) -> Dict[str, str]:
    import torch

    from .engine import distributed

    recipe = config.train_config(0, config.out)
    world = distributed.context(config.device).world_size
    return {"command": " ".join(["snas-fast"] + sys.argv[1:]) if sys.argv[0].endswith("snas-fast")
            else f"snas-fast groundtruth --space {config.space} --dataset {config.dataset} --archs {config.archs} "
                 f"--seeds {config.seeds}" + (f" --seeded-archs {config.seeded_archs}"
                                              if config.seeded_archs is not None else ""),
            "date": datetime.date.today().isoformat(), "torch": torch.__version__,
            "recipe": ", ".join(f"{k}={getattr(recipe, k)}" for k in ("layers", "channels", "epochs", "batch_size",
                                                                      "optimizer", "lr", "weight_decay", "drop_path",
                                                                      "auxiliary_weight")),
            "space": config.space, "dataset": str(config.dataset), "draw_seed": str(config.seed),
            "processes": f"{world}, {torch.get_num_threads()} thread(s) each (seconds are per training, the processes "
                         f"running side by side)"}


def write_groundtruth(rows: Sequence[dict], header: Dict[str, str], path: str) -> None:
    """The CSV of ``rows`` under ``header``'s ``# key: value`` lines, written whole or not at all."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        for key, value in header.items():
            f.write(f"# {key}: {value}\n")
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow(dict(row, genotype=json.dumps(row["genotype"], sort_keys=True)))
    os.replace(tmp, path)


def summary(rows: Sequence[dict]) -> str:
    """The Markdown summary of ground-truth ``rows``: the distribution of the architectures' mean test accuracy,
    and the spread of the architectures trained at several seeds."""
    means = arch_means(rows)
    accs = sorted(m["test_acc"] for m in means)
    q = statistics.quantiles(accs, n=20, method="inclusive") if len(accs) > 1 else accs * 19
    lines = [f"{len(means)} architectures, {len(rows)} trainings, {statistics.mean(r['seconds'] for r in rows):.1f} s "
             f"per training", "", "| min | 5 % | 25 % | median | 75 % | 95 % | max |", "|---:|---:|---:|---:|---:|---:|---:|",
             f"| {accs[0]:.4f} | {q[0]:.4f} | {q[4]:.4f} | {q[9]:.4f} | {q[14]:.4f} | {q[18]:.4f} | {accs[-1]:.4f} |"]
    by: Dict[int, List[float]] = {}
    for r in rows:
        by.setdefault(r["arch"], []).append(r["test_acc"])
    spreads = [statistics.stdev(v) for v in by.values() if len(v) > 1]
    if spreads:
        lines += ["", f"Seed noise: over the {len(spreads)} architectures trained at {max(map(len, by.values()))} "
                      f"seeds, the standard deviation of one architecture's test accuracy is "
                      f"{statistics.mean(spreads):.4f} on average (median {statistics.median(spreads):.4f}, max "
                      f"{max(spreads):.4f}); the architectures' means spread {statistics.stdev(accs):.4f}."]
    return "\n".join(lines) + "\n"


def groundtruth(config: GroundTruthConfig, resume: bool = False, progress: bool = True) -> List[dict]:
    """Trains every ``(arch, seed)`` of ``config`` (shared over the ranks under torchrun; finished ones are read
    back with ``resume``), then writes ``groundtruth.csv`` and ``groundtruth.md``; returns the rows."""
    from .compare import retrain_row, run_units
    from .engine import distributed

    config.validate()
    data = config.load_data()
    space = config.bound_space(data[2] if data else None)
    archs = sample_archs(space, config.archs, config.seed)

    def run(label: str, seed: int, previous: Optional[dict]) -> dict:
        k = int(label[len("arch"):])
        start = time.perf_counter()
        row = retrain_row(config, seed, archs[k], os.path.join(config.out, label, f"seed{seed}"))
        return dict(row, arch=k, seconds=time.perf_counter() - start, genotype=json.loads(row["genotype"]))

    units = [[(f"arch{k:03d}", s)] for k, s in config.units()]
    rows = run_units(config, units, run, resume, progress)
    rows.sort(key=lambda r: (r["arch"], r["seed"]))
    if distributed.context(config.device).is_main:
        write_groundtruth(rows, _header(config), os.path.join(config.out, "groundtruth.csv"))
        with open(os.path.join(config.out, "groundtruth.md"), "w") as f:
            f.write(summary(rows))
    return rows
