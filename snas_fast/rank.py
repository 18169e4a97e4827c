"""``snas-fast rank``: how well does each cheap proxy rank architectures? ``archs`` architectures are drawn from the
space's prior (DARTS's: uniformly, top-2 form; any space with a supernet, ``--space``) and each is scored by

- ``naswot``: :func:`snas_fast.search.naswot.score` of its untrained network (one training batch);
- ``rsws``: its accuracy on search-validation with the shared weights of a supernet trained by weight-sharing random
  search (one uniformly drawn path per step);
- ``snas``: its accuracy on search-validation with the shared weights of a supernet trained by SNAS's search
  (the derived child's way of running an architecture in the supernet);
- ``trained``: its search-validation accuracy after short training with the retraining recipe (the reference).

Each proxy's Kendall τ and Spearman ρ against ``trained`` (``scipy.stats``) go to ``rank.md``, every score to
``rank.csv``, and one scatter plot per proxy to ``<proxy>_vs_trained.png``. The test part is never touched.
"""
from __future__ import annotations

import csv
import json
import math
import os
import warnings
from dataclasses import dataclass
from typing import Dict, List

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


class RankError(RunError):
    """A ranking that cannot start (bad setting); one-line message."""


@dataclass
class RankConfig(TrainingConfig):
    """``archs`` architectures of the space's search size (DARTS: 5 cells of C = 8); the two supernets trained
    ``search_epochs``; each architecture trained ``epochs`` for the reference accuracy."""

    Error = RankError
    roles = ("search", "supernet")

    out: str = setting("runs/rank", "run directory")
    archs: int = setting(20, "architectures drawn and scored")
    epochs: int = setting(3, "training epochs of each architecture (the reference accuracy)")
    search_epochs: int = setting(10, "epochs of the rsws and snas supernets")
    drop_path: float = setting(0.0, "drop-path of the reference training")

    def validate(self) -> None:
        super().validate()
        self.check_ints(("archs",), 2)
        self.check_ints(("search_epochs",), 1)


def rank_correlations(proxy: List[float], reference: List[float]) -> Dict[str, float]:
    """Kendall τ (tau-b) and Spearman ρ of ``proxy`` against ``reference`` (scipy.stats); ``-inf`` proxy values
    (a singular NASWOT kernel) rank last. NaN when either side is constant."""
    from scipy import stats

    finite = [p if math.isfinite(p) else -1e300 for p in proxy]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant input: scipy warns and returns nan
        tau = stats.kendalltau(finite, reference).statistic
        rho = stats.spearmanr(finite, reference).statistic
    return dict(kendall_tau=float(tau), spearman_rho=float(rho))


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


def rank(config: RankConfig, progress: bool = True) -> List[dict]:
    """Scores ``config.archs`` architectures by every proxy and by training; writes ``rank.csv``, ``rank.md`` and
    the plots; returns the rows."""
    from .engine import distributed
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
    run = RunDir(config.out, ctx)
    if os.path.exists(run.path("rank.md")) and not config.overwrite:
        raise RankError(f"out: {config.out} holds a ranking already; give --overwrite true to compute it again "
                        f"there, or choose another --out")
    run.start(config.to_dict())
    gen = make_generator(config.seed, 0x72616E6B)  # "rank"
    genotypes = [space.sample(gen) for _ in range(config.archs)]
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
    with open(run.path("rank.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["arch", *PROXIES, "trained", "genotype"])
        writer.writeheader()
        writer.writerows(rows)
    reference = [r["trained"] for r in rows]
    table = {p: rank_correlations([r[p] for r in rows], reference) for p in PROXIES}
    write_json_atomic(table, run.path("correlations.json"))
    lines = [f"{config.archs} architectures, reference: search-validation accuracy after {config.epochs} epochs",
             "", "| proxy | Kendall τ | Spearman ρ |", "|---|---:|---:|"]
    lines += [f"| {p} | {t['kendall_tau']:.3f} | {t['spearman_rho']:.3f} |" for p, t in table.items()]
    with open(run.path("rank.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    for p in PROXIES:
        points = [(r[p], r["trained"]) for r in rows if math.isfinite(r[p])]
        plots.plot_scatter({p: points}, run.path(f"{p}_vs_trained.png"), f"{p} score",
                           "search-validation accuracy after training",
                           title=f"Kendall τ {table[p]['kendall_tau']:.3f}, Spearman ρ {table[p]['spearman_rho']:.3f}")
    return rows
