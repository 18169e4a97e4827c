"""``snas-fast rank``: how well does each cheap proxy rank architectures? ``archs`` architectures are drawn from the
space's prior (DARTS's: uniformly, top-2 form; any space with a supernet, ``--space``), or read from a ground-truth
sample (``--groundtruth``, a CSV of ``snas-fast groundtruth``: its architectures and their test accuracy), and each is
scored by

- ``naswot``: :func:`snas_fast.search.naswot.score` of its untrained network (one training batch);
- ``rsws``: its accuracy on search-validation with the shared weights of a supernet trained by weight-sharing random
  search (one uniformly drawn path per step);
- ``snas``: its accuracy on search-validation with the shared weights of a supernet trained by SNAS's search
  (the derived child's way of running an architecture in the supernet);
- ``trained``: its search-validation accuracy after short training (``epochs``) with the retraining recipe: the
  reference without a ground truth, one more proxy with it.

Each proxy's Kendall τ and Spearman ρ against the reference (``scipy.stats``), with a bootstrap 95 % interval over
the architectures (``scipy.stats.bootstrap``, paired, percentile), go to ``rank.md`` and ``correlations.json``, every
score to ``rank.csv``, and one scatter plot per proxy to ``<proxy>_vs_<reference>.png``. The search parts are the only
data a proxy reads; the ground truth's test accuracies come from its file.
"""
from __future__ import annotations

import csv
import json
import math
import os
import warnings
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch

from . import data as datasets
from ._progress import bar
from .engine.config import RunError, TrainingConfig, setting
from .engine.data import eval_loader
from .engine.retrain import TrainConfig, train
from .engine.rundir import RunDir, write_json_atomic
from .engine.seeds import make_generator, seed_everything

__all__ = ["PROXIES", "RankConfig", "RankError", "rank_correlations", "rank"]

PROXIES = ("naswot", "rsws", "snas")
#: bootstrap resamples of the intervals
RESAMPLES = 1000


class RankError(RunError):
    """A ranking that cannot start (bad setting); one-line message."""


@dataclass
class RankConfig(TrainingConfig):
    """``archs`` architectures of the space's search size (DARTS: 5 cells of C = 8); the two supernets trained
    ``search_epochs``; each architecture trained ``epochs`` for the reference accuracy (or, with ``groundtruth``, the
    ``trained`` proxy)."""

    Error = RankError
    roles = ("search", "supernet")

    out: str = setting("runs/rank", "run directory")
    archs: Optional[int] = setting(None, "architectures scored: drawn (default 20), or the first of --groundtruth's "
                                         "(default: all of them)", kind=int)
    groundtruth: Optional[str] = setting(None, "a ground-truth CSV (snas-fast groundtruth; bench/groundtruth/): its "
                                               "architectures are scored and its test accuracies are the reference",
                                         kind=str)
    epochs: int = setting(3, "training epochs of each architecture (the reference accuracy, or with --groundtruth "
                             "the trained proxy)")
    search_epochs: int = setting(10, "epochs of the rsws and snas supernets")
    drop_path: float = setting(0.0, "drop-path of the reference training")

    def validate(self) -> None:
        super().validate()
        if self.archs is not None:
            self.check_ints(("archs",), 2)
        self.check_ints(("search_epochs",), 1)
        if self.groundtruth is not None and not os.path.isfile(self.groundtruth):
            raise RankError(f"groundtruth: expected a ground-truth CSV file, got {self.groundtruth!r} (no such file)")


def rank_correlations(proxy: Sequence[float], reference: Sequence[float], resamples: int = 0,
                      seed: int = 0) -> Dict[str, float]:
    """Kendall τ (tau-b) and Spearman ρ of ``proxy`` against ``reference`` (scipy.stats); ``-inf`` proxy values
    (a singular NASWOT kernel) rank last. NaN when either side is constant. ``resamples > 0``: also their bootstrap
    95 % intervals over the pairs (``scipy.stats.bootstrap``, paired, percentile method, ``seed``), as
    ``kendall_tau_low`` / ``_high`` and ``spearman_rho_low`` / ``_high``."""
    from scipy import stats

    finite = [p if math.isfinite(p) else -1e300 for p in proxy]
    reference = list(reference)
    measures = dict(kendall_tau=lambda a, b: stats.kendalltau(a, b).statistic,
                    spearman_rho=lambda a, b: stats.spearmanr(a, b).statistic)
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant input (or resample): scipy warns and returns nan
        for name, measure in measures.items():
            out[name] = float(measure(finite, reference))
            if resamples:
                interval = stats.bootstrap((finite, reference), measure, paired=True, vectorized=False,
                                           n_resamples=int(resamples), method="percentile",
                                           random_state=int(seed)).confidence_interval
                out[f"{name}_low"], out[f"{name}_high"] = float(interval.low), float(interval.high)
    return out


def _supernet_scores(config: RankConfig, strategy_name: str, data, genotypes, ctx, space) -> List[float]:
    from .search.registry import get_strategy
    from .search.rsws import shared_weight_accuracy

    strategy = get_strategy(strategy_name)
    fields = strategy.config_class.__dataclass_fields__
    # rank recomputes everything (the command itself refuses a finished --out)
    settings = dict(config.to_dict(), epochs=config.search_epochs, archs=1, strategy=strategy_name,
                    out=os.path.join(config.out, strategy_name), overwrite=True)
    search_config = strategy.config_class(**{k: v for k, v in settings.items() if k in fields and
                                             k not in ("lr", "lr_min", "weight_decay", "drop_path")})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = strategy.run(search_config, data, progress=False)
    model = result.model
    loader = eval_loader(data[1], config.batch_size, ctx, config.num_workers)
    return [shared_weight_accuracy(model, space, g, loader, ctx.device) for g in genotypes]


def _interval(table: Dict[str, float], name: str) -> str:
    low, high = table.get(f"{name}_low", math.nan), table.get(f"{name}_high", math.nan)
    return f"{table[name]:.3f} [{low:.3f}, {high:.3f}]"


def rank(config: RankConfig, progress: bool = True) -> List[dict]:
    """Scores the architectures by every proxy and by training; writes ``rank.csv``, ``rank.md``,
    ``correlations.json`` and the plots; returns the rows."""
    from .engine import distributed
    from .groundtruth import arch_means, read_groundtruth
    from .search.naswot import score as naswot_score
    from .viz import plots

    from .search.snas import Snas

    config.validate()
    ctx = distributed.context(config.device)
    why = Snas().refusal(config.space_object())
    if why:
        raise RankError(f"space: {why}")
    data = config.load_data()
    space = config.bound_space(data[2])
    truth = None
    if config.groundtruth:
        try:
            header, truth_rows = read_groundtruth(config.groundtruth)
        except RunError as error:
            raise RankError(str(error)) from None
        if header.get("space", config.space) != config.space:
            raise RankError(f"groundtruth: {config.groundtruth} is a sample of space {header['space']}, the ranking's "
                            f"space is {config.space}")
        truth = arch_means(truth_rows)[:config.archs]
        try:
            genotypes = [space.from_dict(t["genotype"]) for t in truth]
        except ValueError as error:
            raise RankError(f"groundtruth: {config.groundtruth}: {' '.join(str(error).split())}") from None
    run = RunDir(config.out, ctx)
    if os.path.exists(run.path("rank.md")) and not config.overwrite:
        raise RankError(f"out: {config.out} holds a ranking already; give --overwrite true to compute it again "
                        f"there, or choose another --out")
    run.start(config.to_dict())
    gen = make_generator(config.seed, 0x72616E6B)  # "rank"
    if truth is None:
        genotypes = [space.sample(gen) for _ in range(config.archs or 20)]
    x = datasets.batch_of(data[0], torch.randperm(len(data[0]), generator=gen)[:128].tolist()).to(ctx.device)
    rows = [dict(arch=k, genotype=json.dumps(space.to_dict(g))) for k, g in enumerate(genotypes)]
    for k, (g, row) in enumerate(zip(bar(genotypes, "naswot", progress), rows)):
        seed_everything(config.seed + k)
        row["naswot"] = naswot_score(space.child(g).to(ctx.device), x)
    for name in ("rsws", "snas"):
        for row, s in zip(rows, _supernet_scores(config, name, data, genotypes, ctx, space)):
            row[name] = s
    for k, (g, row) in enumerate(zip(bar(genotypes, "training", progress), rows)):
        train_config = config.carried_to(TrainConfig, out=run.path(f"arch_{k:03d}"), genotype="rank", overwrite=True)
        row["trained"] = train(train_config, data, genotype=g, progress=False).test_acc  # search-validation
    proxies, reference = PROXIES, "trained"
    if truth is not None:
        proxies, reference = PROXIES + ("trained",), "groundtruth"
        for row, t in zip(rows, truth):
            row["groundtruth"] = t["test_acc"]
    with open(run.path("rank.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["arch", *proxies, reference, "genotype"])
        writer.writeheader()
        writer.writerows(rows)
    ref = [r[reference] for r in rows]
    table = {p: rank_correlations([r[p] for r in rows], ref, RESAMPLES, config.seed) for p in proxies}
    write_json_atomic(table, run.path("correlations.json"))
    described = (f"test accuracy of the ground truth {config.groundtruth} (mean over its seeds)" if truth is not None
                 else f"search-validation accuracy after {config.epochs} epochs")
    lines = [f"{len(rows)} architectures, reference: {described}; [95 % bootstrap interval over the architectures, "
             f"{RESAMPLES} resamples]", "", "| proxy | Kendall τ | Spearman ρ |", "|---|---:|---:|"]
    lines += [f"| {p}{f' ({config.epochs} epochs)' if p == 'trained' else ''} | {_interval(t, 'kendall_tau')} | "
              f"{_interval(t, 'spearman_rho')} |" for p, t in table.items()]
    with open(run.path("rank.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    label = "ground-truth test accuracy" if truth is not None else "search-validation accuracy after training"
    for p in proxies:
        points = [(r[p], r[reference]) for r in rows if math.isfinite(r[p])]
        plots.plot_scatter({p: points}, run.path(f"{p}_vs_{reference}.png"), f"{p} score", label,
                           title=f"Kendall τ {table[p]['kendall_tau']:.3f}, Spearman ρ {table[p]['spearman_rho']:.3f}")
    return rows
