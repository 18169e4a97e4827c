"""SNAS + perturbation-based selection (Wang et al. ICLR 2021, DARTS-PT; ``sota/cnn/projection.py``): the SNAS
supernet is trained as :func:`snas_fast.search.snas.search` trains it, then the architecture is chosen by what each
candidate contributes to the supernet's accuracy, not by ``argmax(log_alpha)``.

- Operations: the supernet runs with fixed weights ``softmax(log_alpha)``. Edges are decided in a random order
  (seeded): on the chosen edge each candidate in turn is masked (its weight set to 0) and search-validation accuracy
  measured; the candidate whose removal lowers it most is kept (the edge becomes one-hot). The zero op is not a
  candidate: masking it changes nothing. Between two decisions the weights are fine-tuned ``pt_interval`` epochs
  (learning rate a tenth of the search's, cosine), by the one training loop.
- Topology (DARTS's top-2 form): for each node with more than two inputs, the incoming edge whose removal hurts
  least is dropped, until two remain.

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
from ..spaces.darts.genotypes import CONCAT, Genotype
from ..spaces.darts.space import EDGES, NUM_NODES
from ..spaces.darts.supernet import Supernet
from .base import Strategy
from .snas import SearchConfig, SearchError, load_search_data, search

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
    """The settings that make the supernet: every SearchConfig field but the run directory."""
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(SearchConfig) if f.name != "out"}


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
    """The supernet's weights trained under fixed architecture weights (one per cell type)."""

    def __init__(self, config, model: Supernet, weights: List[Tensor], loader, ctx):
        self.config, self.ctx, self.model, self.train_loader = config, ctx, model, loader
        self.weights = weights
        self.optimizer = torch.optim.SGD(model.weight_parameters(), config.lr / 10, momentum=config.momentum,
                                         weight_decay=config.weight_decay)
        self.schedule = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, float(config.epochs))

    def state_dict(self) -> dict:
        return dict(model=self.model.state_dict(), optimizer=self.optimizer.state_dict())

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])

    def begin_epoch(self, epoch: int) -> Dict[str, float]:
        self.model.train()
        return {}

    def loss(self, x: Tensor, y: Tensor, epoch: int, step: int):
        self.optimizer.zero_grad(set_to_none=True)
        logits = self.model.run(x, [self.weights[t] for t in self.model.cell_types()])
        return F.cross_entropy(logits, y), logits, {}

    def clipped_parameters(self):
        return self.model.weight_parameters()

    def end_epoch(self, epoch: int) -> Dict[str, object]:
        self.schedule.step()
        return {}


def _accuracy(model: Supernet, weights: List[Tensor], loader, device) -> float:
    return evaluate(lambda x: model.run(x, [weights[t] for t in model.cell_types()]), model, loader, device)[1]


def select(model: Supernet, config: SnasPtConfig, data, ctx, progress: bool = False) -> Genotype:
    """DARTS-PT's selection on a trained supernet (module docstring); returns the top-2 genotype."""
    train_set, val_set, _ = data
    device = ctx.device
    tloader = train_loader(train_set, config.batch_size, config.seed, ctx, config.num_workers)
    vloader = eval_loader(val_set, config.batch_size, ctx, config.num_workers)
    weights = [w.detach().clone() for w in model.alphas()]  # [normal, reduce], each [14, K]
    zero = set(model.space.zero_columns())
    K = weights[0].shape[1]
    gen = make_generator(config.seed, 0x70742D73)  # "pt-s"
    order = [(t, e) for t in range(2) for e in range(len(EDGES))]
    order = [order[i] for i in torch.randperm(len(order), generator=gen).tolist()]

    def recalibrate():
        if config.bn_recalibration > 0:
            recalibrate_bn(lambda x: model.run(x, [weights[t] for t in model.cell_types()]), model, tloader,
                           config.bn_recalibration, device)

    for n, (t, e) in enumerate(bar(order, "perturbation", progress)):
        recalibrate()
        accs = {}
        for k in range(K):
            if k in zero:
                continue
            masked = [w.clone() for w in weights]
            masked[t][e, k] = 0.0
            accs[k] = _accuracy(model, masked, vloader, device)
        keep = min(accs, key=lambda k: accs[k])  # its removal hurts most
        weights[t][e] = F.one_hot(torch.tensor(keep), K).to(weights[t])
        if config.pt_interval > 0 and n + 1 < len(order):
            tune = dict(config.to_dict(), epochs=config.pt_interval, out=os.path.join(config.out, "pt", f"{n:02d}"),
                        overwrite=True)  # a selection is redone whole
            tune_config = SnasPtConfig.from_dict(tune)
            fit(_FineTune(tune_config, model, weights, tloader, ctx), progress=False)
    recalibrate()
    # topology: per node, drop the incoming edge whose removal hurts least until two remain
    cells = []
    for t in range(2):
        gene = []
        for node in range(NUM_NODES):
            incoming = [e for e, (n, _) in enumerate(EDGES) if n == node]
            while len(incoming) > 2:
                hurt = {}
                for e in incoming:
                    cut = [w.clone() for w in weights]
                    cut[t][e] = 0.0
                    hurt[e] = _accuracy(model, cut, vloader, device)
                incoming.remove(max(incoming, key=lambda e: hurt[e]))  # removing it leaves the best accuracy
            names = model.space.op_names
            gene.extend((names[int(weights[t][e].argmax())], EDGES[e][1]) for e in incoming)
        cells.append(tuple(gene))
    return Genotype.from_dict(dict(normal=cells[0], normal_concat=CONCAT, reduce=cells[1], reduce_concat=CONCAT),
                              model.space)


@dataclass
class SnasPtResult:
    genotype: object
    score: float  # search-validation accuracy of the selected architecture with the shared weights
    argmax_genotype: object = None  # SNAS's own derivation, for comparison
    seconds: float = 0.0


class SnasPt(Strategy):
    name = "snas-pt"
    config_class = SnasPtConfig

    def load_data(self, config: SnasPtConfig):
        return load_search_data(config)

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
        genotype = select(result.model, config, data, ctx, progress)
        loader = eval_loader(data[1], config.batch_size, ctx, config.num_workers)
        score = shared_weight_accuracy(result.model, genotype, loader, ctx.device)
        RunDir(config.out, ctx).write_json("genotype_pt.json", dict(genotype=genotype.to_dict(), score=score,
                                                                    argmax_genotype=result.genotype.to_dict()))
        return SnasPtResult(genotype, score, result.genotype, time.perf_counter() - start)
