"""SNAS + perturbation-based selection (Wang et al. ICLR 2021, DARTS-PT; ``sota/cnn/projection.py``): the SNAS
supernet is trained as :func:`snas_fast.search.snas.search` trains it, then the architecture is chosen by what each
candidate contributes to the supernet's accuracy, not by ``argmax(log_alpha)``. It runs on any space with a one-shot
supernet: a row of a ``log_alpha`` is one decision (a DARTS edge, a graph link's node or edge operation).

- Operations: the supernet runs with fixed weights ``softmax(log_alpha)``. Rows are decided in a random order
  (seeded): on the chosen row each candidate in turn is masked (its weight set to 0) and search-validation accuracy
  measured; the candidate whose removal lowers it most is kept (the row becomes one-hot). The zero op is not a
  candidate: masking it changes nothing. Between two decisions the weights are fine-tuned ``pt_interval`` epochs
  (learning rate a tenth of the search's, cosine), by the one training loop.
- Topology, where the space has one (DARTS's top-2 form: :meth:`DartsSpace.topology
  <snas_fast.spaces.darts.space.DartsSpace.topology>`): for each node with more than two inputs, the incoming edge
  whose removal hurts least is dropped, until two remain. Spaces without (the graph space: its ``none`` operation is
  a candidate of every link) take the selected rows as they are.

BatchNorm is recalibrated (``bn_recalibration`` training batches) before each decision's measurements.

``supernet``: the directory of a finished ``snas`` search with the same settings; its trained supernet is what the
selection starts from (the search is not run again: with the same seed it would train the same weights).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .._progress import bar
from ..engine import distributed
from ..engine.config import setting
from ..engine.data import eval_loader, train_loader
from ..engine.loop import Task, evaluate, fit, recalibrate_bn
from ..engine.rundir import CHECKPOINT_FILE, METRICS_FILE, RunDir, read_metrics
from ..engine.seeds import make_generator
from .snas import SearchConfig, SearchError, Snas, search

__all__ = ["SnasPt", "SnasPtConfig", "select"]


@dataclass
class SnasPtConfig(SearchConfig):
    """SNAS's settings, and the selection's."""

    pt_interval: int = setting(1, "fine-tuning epochs between two decisions (DARTS-PT: 5)")
    supernet: Optional[str] = setting(None, "the directory of a finished snas search with these settings: select "
                                            "from its supernet instead of training one", kind=str)

    def validate(self) -> None:
        super().validate()
        self.check_ints(("pt_interval",), 0)


def _search_settings(config: SearchConfig) -> dict:
    """The settings that make the supernet: every SearchConfig field but the run directory and the strategy."""
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(SearchConfig)
            if f.name not in ("out", "strategy")}


def adopt_supernet(config: SnasPtConfig) -> None:
    """Makes ``config.out`` a copy of the finished snas search ``config.supernet`` (its checkpoint and metrics; this
    run's config.json), so that the search resumes there with nothing left to train. Raises SearchError, one line,
    for a directory that is not a finished search with the same settings."""
    src = config.supernet
    try:
        with open(os.path.join(src, "config.json")) as f:
            theirs = _search_settings(SearchConfig.from_dict(dict(json.load(f), recipe="custom")))
        epochs_done = len(read_metrics(os.path.join(src, METRICS_FILE)))
    except (OSError, ValueError) as error:
        raise SearchError(f"supernet: {src} is not a snas search directory ({error})") from None
    ours = dict(_search_settings(config), recipe="custom")
    differ = [k for k in ours if ours[k] != theirs[k]]
    if differ:
        raise SearchError(f"supernet: {src} was searched with other settings ({differ[0]} {theirs[differ[0]]!r}, "
                          f"here {ours[differ[0]]!r})")
    if epochs_done < config.epochs or not os.path.exists(os.path.join(src, CHECKPOINT_FILE)):
        raise SearchError(f"supernet: {src} is not finished ({epochs_done} of {config.epochs} epochs)")
    os.makedirs(config.out, exist_ok=True)
    for name in (CHECKPOINT_FILE, METRICS_FILE, "genotype.json"):
        if os.path.exists(os.path.join(src, name)):
            shutil.copyfile(os.path.join(src, name), os.path.join(config.out, name))
    RunDir(config.out, distributed.context(config.device)).write_json("config.json", config.to_dict())


class _FineTune(Task):
    """The supernet's weights trained under fixed architecture weights (one per ``log_alpha``), by ``config``'s
    optimiser (a tenth of the search's rate: :func:`select`)."""

    def __init__(self, config, model, weights: List[Tensor], loader, ctx):
        self.config, self.ctx, self.model, self.train_loader = config, ctx, model, loader
        self.weights = weights
        self.optimizer, self.schedule = config.weight_optimizer(model.weight_parameters())

    def begin_epoch(self, epoch: int) -> Dict[str, float]:
        self.model.train()
        return {}

    def loss(self, x: Tensor, y: Tensor, epoch: int, step: int):
        self.optimizer.zero_grad(set_to_none=True)
        logits = self.model.run_arch(x, self.weights)
        return F.cross_entropy(logits, y), logits, {}

    def clipped_parameters(self):
        return self.model.weight_parameters()

    def end_epoch(self, epoch: int) -> Dict[str, object]:
        self.schedule.step()
        return {}


def _accuracy(model, weights: List[Tensor], loader, device) -> float:
    return evaluate(lambda x: model.run_arch(x, weights), model, loader, device)[1]


def _row(w: Tensor, e: int) -> Tensor:
    """Row ``e`` of ``w [..., K]`` (rows in ``w.view(-1, K)`` order), a view."""
    return w.view(-1, w.shape[-1])[e]


def select(model, config: SnasPtConfig, data, ctx, space, progress: bool = False):
    """DARTS-PT's selection on a trained supernet of ``space`` (module docstring); returns the architecture (DARTS: a
    top-2 genotype)."""
    train_set, val_set, _ = data
    device = ctx.device
    tloader = train_loader(train_set, config.batch_size, config.seed, ctx, config.num_workers)
    vloader = eval_loader(val_set, config.batch_size, ctx, config.num_workers)
    weights = [w.detach().clone() for w in model.alphas()]  # one per log_alpha, e.g. [normal, reduce] [14, K]
    zero = set(space.zero_columns())
    K = weights[0].shape[-1]
    gen = make_generator(config.seed, 0x70742D73)  # "pt-s"
    order = [(t, e) for t in range(len(weights)) for e in range(weights[t].numel() // weights[t].shape[-1])]
    order = [order[i] for i in torch.randperm(len(order), generator=gen).tolist()]

    def recalibrate():
        if config.bn_recalibration > 0:
            recalibrate_bn(lambda x: model.run_arch(x, weights), model, tloader, config.bn_recalibration, device)

    for n, (t, e) in enumerate(bar(order, "perturbation", progress)):
        recalibrate()
        accs = {}
        for k in range(K):
            if k in zero:
                continue
            masked = [w.clone() for w in weights]
            _row(masked[t], e)[k] = 0.0
            accs[k] = _accuracy(model, masked, vloader, device)
        keep = min(accs, key=lambda k: accs[k])  # its removal hurts most
        _row(weights[t], e).copy_(F.one_hot(torch.tensor(keep), K).to(weights[t]))
        if config.pt_interval > 0 and n + 1 < len(order):
            tune = dict(config.to_dict(), epochs=config.pt_interval, out=os.path.join(config.out, "pt", f"{n:02d}"),
                        lr=config.lr / 10, lr_min=0.0, overwrite=True)  # a selection is redone whole
            tune_config = type(config).from_dict(tune)
            fit(_FineTune(tune_config, model, weights, tloader, ctx), progress=False)
    recalibrate()
    topology = getattr(space, "topology", None)
    if topology is None:
        return space.derive(weights)
    # topology: per node, drop the incoming edge whose removal hurts least until `keep` remain
    kept: List[List[int]] = [[] for _ in weights]
    for t, incoming, keep in topology():
        incoming = list(incoming)
        while len(incoming) > keep:
            hurt = {}
            for e in incoming:
                cut = [w.clone() for w in weights]
                _row(cut[t], e).zero_()
                hurt[e] = _accuracy(model, cut, vloader, device)
            incoming.remove(max(incoming, key=lambda e: hurt[e]))  # removing it leaves the best accuracy
        kept[t] += incoming
    return space.derive(weights, kept=kept)


@dataclass
class SnasPtResult:
    genotype: object
    score: float  # search-validation accuracy of the selected architecture with the shared weights
    argmax_genotype: object = None  # SNAS's own derivation, for comparison
    seconds: float = 0.0


class SnasPt(Snas):
    name = "snas-pt"
    config_class = SnasPtConfig
    variants = {}

    def run(self, config: SnasPtConfig, data, resume: bool = False, progress: bool = True,
            callbacks: Sequence = ()) -> SnasPtResult:
        from .rsws import shared_weight_accuracy

        start = time.perf_counter()
        if config.supernet and not (resume and os.path.exists(os.path.join(config.out, CHECKPOINT_FILE))):
            if distributed.context(config.device).is_main:
                adopt_supernet(config)
            resume = True
        result = search(config, data, resume, progress, callbacks)
        ctx = distributed.context(config.device)
        space = result.space
        genotype = select(result.model, config, data, ctx, space, progress)
        loader = eval_loader(data[1], config.batch_size, ctx, config.num_workers)
        score = shared_weight_accuracy(result.model, space, genotype, loader, ctx.device)
        RunDir(config.out, ctx).write_json("genotype_pt.json", dict(genotype=space.to_dict(genotype), score=score,
                                                                    argmax_genotype=space.to_dict(result.genotype)))
        return SnasPtResult(genotype, score, result.genotype, time.perf_counter() - start)
