"""Network-morphism search (Auto-Keras; Jin, Song, Hu, KDD 2019) and its ablations, as strategies: ``morph-bo``
(Bayesian optimisation over the edit-distance kernel, :mod:`snas_fast.search.bayes`), ``morph-random`` (a random
morphism of a random trained network) and ``morph-bfs`` (breadth-first over the morph tree: the trained networks in
the order they were trained, each one's ``neighbours`` random children in turn).

Each step chooses a trained network and a chain of morphisms (:func:`propose`, pure policy), applies them with
weights (:meth:`~snas_fast.spaces.morph.MorphNet.morph`: the child starts as its father's function), trains the
child up to ``epochs`` epochs with Adam and early stopping on the search-validation accuracy (the engine's loop,
:func:`snas_fast.engine.loop.fit`), keeps its best epoch's weights and records it. The first network is Auto-Keras's
(:meth:`MorphNet.initial`; its one-row form for sequences such as ``mnist1d``'s). The search stops when ``budget``
minutes (training and choosing, summed over the models, so a resumed search keeps its budget) or ``models`` networks
are spent.

Run directory (``out``):
    config.json
    history.csv      model id, parent, morphisms, params, validation accuracy, acquisition value, epochs, seconds
                     of training and of choosing (the Bayesian-optimisation step)
    models/<id>.pt   each trained network: its description, weights and validation accuracy (children inherit them)
    models/<id>/     its training run (config.json, metrics.jsonl)
    best.json        the best network's description, id and validation accuracy; best.pt its weights
    genotype.json    ``{"genotype": description, "source": ...}`` (``snas-fast train --genotype DIR`` retrains it)
    summary.json     the best network's test accuracy (the test part, read once at the end), budget spent, BO share
    search_tree.png  the morph tree, nodes coloured by validation accuracy (the CLI's callback)

Resumable: ``--resume`` reads the history back; every random choice is a function of (seed, step), so a resumed
search makes the choices an uninterrupted one would. An interrupted child is trained again.
"""
from __future__ import annotations

import csv
import math
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from typing import Callable, ClassVar, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .._progress import bar
from ..engine import distributed
from ..engine.config import RunError, TrainingConfig, setting
from ..engine.data import eval_loader, train_loader
from ..engine.loop import Task, evaluate, fit
from ..engine.rundir import read_checkpoint, save_atomic, write_json_atomic
from ..engine.seeds import make_generator, seed_everything, seed_for
from ..spaces.morph import MorphNet, MorphSpace, MorphSpecError, Spec, input_form
from .base import Strategy
from .bayes import Observation, Proposal, acquisition_search

__all__ = ["HISTORY_FIELDS", "MorphConfig", "MorphError", "MorphResult", "MorphSearch", "PROPOSERS", "propose"]

PROPOSERS = ("bo", "random", "bfs")
HISTORY_FIELDS = ["model_id", "parent", "morphisms", "params", "val_acc", "acquisition", "epochs", "train_s",
                  "choose_s"]
_CHOOSE, _NOISE, _BFS = 0x63686F6F, 0x6E6F6973, 0x62667320  # "choo", "nois", "bfs ": streams of seed_for


class MorphError(RunError):
    """A morphism search that cannot start or go on; one-line message."""


@dataclass
class MorphConfig(TrainingConfig):
    """Settings of a morphism search on the morphism space (its ``width``, ``max_width``, ``max_params``). Of the
    training settings it uses ``epochs``, ``batch_size``, ``lr`` and ``weight_decay`` (Adam's, Auto-Keras's
    optimiser) and ``grad_clip``."""

    Error = MorphError
    roles = ("search",)
    hidden: ClassVar[Tuple[str, ...]] = ("optimizer", "momentum", "lr_min", "drop_path", "sync_bn", "depth")

    space: str = setting("morph", "search space: a morphism space (morph)")
    out: str = setting("runs/morph", "run directory")
    proposer: str = setting("bo", "how the next network is chosen: bo (Bayesian optimisation), random (a random "
                                  "morphism of a random trained network), bfs (breadth-first over the morph tree)",
                            choices=PROPOSERS, flag="strategy")
    budget: float = setting(10.0, "minutes of search: training and choosing, summed over the networks")
    models: Optional[int] = setting(None, "stop after this many trained networks (None: the budget alone)",
                                    kind=int)
    epochs: int = setting(15, "most epochs each network trains (early stopping may end it sooner)")
    patience: int = setting(3, "early stopping: epochs without a better validation accuracy")
    neighbours: int = setting(8, "random children drawn per expansion (Auto-Keras: 8)")
    noise: float = setting(1e-4, "noise on the weights a morphism creates, a fraction of each tensor's range")
    chain: int = setting(1, "bo: most morphisms between a proposal and the trained network it inherits from (0: "
                            "unbounded, as Auto-Keras; bench/RESULTS.md shows why 1 is the default)")
    lr: float = setting(1e-3, "Adam learning rate of every network's training")
    weight_decay: float = setting(0.0, "Adam weight decay")

    @classmethod
    def from_dict(cls, d: dict):
        """The config of ``d``; a ``config.json`` written before the proposer had its own name (``"strategy": "bo"``)
        reads as that proposer of the registry's ``morph-bo``."""
        d = dict(d)
        if d.get("strategy") in PROPOSERS and "proposer" not in d:
            d["proposer"] = d["strategy"]
            d["strategy"] = f"morph-{d['proposer']}"
        return super().from_dict(d)

    def validate(self) -> None:
        super().validate()
        self.check_ints(("patience", "neighbours"), 1)
        self.check_ints(("chain",), 0)
        if self.models is not None:
            self.check_ints(("models",), 1)
        if isinstance(self.budget, bool) or not (isinstance(self.budget, (int, float)) and self.budget > 0
                                                 and math.isfinite(self.budget)):
            raise MorphError(f"budget: expected minutes > 0, got {self.budget!r}")
        if isinstance(self.noise, bool) or not (isinstance(self.noise, (int, float)) and 0 <= self.noise < 1):
            raise MorphError(f"noise: expected a fraction in [0, 1), got {self.noise!r}")


# ------------------------------------------------------------------------------------------------------------
# Policy: which network next
# ------------------------------------------------------------------------------------------------------------
def propose(strategy: str, observations: Sequence[Observation], generator: torch.Generator, neighbours: int = 8,
            admissible: Callable[[Spec], bool] = lambda spec: True, max_width: int = 1024,
            seed: int = 0, max_chain: Optional[int] = 1) -> Optional[Proposal]:
    """The next network of ``strategy`` (:data:`PROPOSERS`) given the trained ``observations`` (in training order),
    or None when it finds nothing new. ``bfs`` draws each observation's children from ``(seed, its id)``, so its
    tree does not depend on when it is asked. ``max_chain``: ``bo``'s bound on the morphisms between a proposal
    and its trained father (None: Auto-Keras's unbounded search; see :func:`~snas_fast.search.bayes.
    acquisition_search`)."""
    if strategy not in PROPOSERS:
        raise ValueError(f"strategy: expected one of {', '.join(PROPOSERS)}, got {strategy!r}")
    if not observations:
        raise ValueError("observations: expected at least the initial network, got none")
    known = {o.spec.descriptor() for o in observations}
    if strategy == "bo":
        return acquisition_search(observations, generator, neighbours, admissible=admissible, max_width=max_width,
                                  max_chain=max_chain)
    if strategy == "random":
        for _ in range(16 * neighbours):
            father = observations[int(torch.randint(len(observations), (1,), generator=generator))]
            m = father.spec.draw(generator, max_width)
            child = father.spec.apply(m)
            if child.descriptor() not in known and admissible(child):
                return Proposal(father.id, (m,), child)
        return None
    for father in observations:  # bfs
        g = make_generator(seed, father.id, _BFS)
        for _ in range(neighbours):
            m = father.spec.draw(g, max_width)
            child = father.spec.apply(m)
            if child.descriptor() not in known and admissible(child):
                return Proposal(father.id, (m,), child)
    return None


# ------------------------------------------------------------------------------------------------------------
# Training one network
# ------------------------------------------------------------------------------------------------------------
class ChildTraining(Task):
    """One network trained with Adam on search-train, evaluated on search-validation after every epoch; stops
    after ``patience`` epochs without a better accuracy and keeps the best epoch's weights (:meth:`best`)."""

    nan_hint = "lower --lr"

    def __init__(self, config: MorphConfig, model: MorphNet, train_set, val_set, ctx):
        self.config, self.ctx, self.model = config, ctx, model.to(ctx.device)
        self.optimizer = torch.optim.Adam(model.parameters(), config.lr, weight_decay=config.weight_decay)
        self.train_loader = train_loader(train_set, config.batch_size, config.seed, ctx, config.num_workers)
        self.val_loader = eval_loader(val_set, config.batch_size, ctx, config.num_workers)
        self.best_acc, self.best_state, self.bad = -1.0, None, 0

    def begin_epoch(self, epoch: int) -> Dict[str, float]:
        self.model.train()
        return {}

    def loss(self, x: Tensor, y: Tensor, epoch: int, step: int):
        self.optimizer.zero_grad(set_to_none=True)
        logits = self.model(x)
        return F.cross_entropy(logits, y), logits, {}

    def end_epoch(self, epoch: int) -> Dict[str, object]:
        val_loss, val_acc = evaluate(self.model, self.model, self.val_loader, self.ctx.device)
        if val_acc > self.best_acc:
            self.best_acc, self.bad = val_acc, 0
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        else:
            self.bad += 1
        return dict(val_loss=val_loss, val_acc=val_acc)

    def should_stop(self, row: dict) -> bool:
        return self.bad >= self.config.patience

    def describe(self, row: dict) -> str:
        return f"train_acc {row['train_acc']:.3f} val_acc {row['val_acc']:.3f}"


# ------------------------------------------------------------------------------------------------------------
# The search
# ------------------------------------------------------------------------------------------------------------
@dataclass
class MorphResult:
    genotype: Spec  # the best network's description
    val_acc: float
    best_id: int
    test_acc: float
    history: List[dict] = field(default_factory=list)
    seconds: float = 0.0
    choose_seconds: float = 0.0

    @property
    def score(self) -> float:
        return self.val_acc


def _read_history(path: str) -> List[dict]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for k in ("model_id", "params", "epochs"):
            row[k] = int(row[k])
        for k in ("val_acc", "acquisition", "train_s", "choose_s"):
            row[k] = float(row[k])
        row["parent"] = int(row["parent"]) if row["parent"] else None
    return rows


def _write_history(path: str, rows: List[dict]) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HISTORY_FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow(dict(row, parent="" if row["parent"] is None else row["parent"]))
    os.replace(tmp, path)


class MorphSearch(Strategy):
    """The search of ``config.proposer`` (``morph-bo``; :class:`MorphRandom` and :class:`MorphBfs` are its
    ablations under their own names): the morphism space's own growth strategies. See the module docstring."""

    name = "morph-bo"
    proposer = "bo"
    config_class = MorphConfig
    needs = ("data",)

    def missing(self, space):
        if not isinstance(space, MorphSpace):
            return "morphisms", "has none (its networks do not grow by function-preserving morphisms: --space morph)"
        return super().missing(space)

    def run(self, config: MorphConfig, data, resume: bool = False, progress: bool = True,
            callbacks: Sequence = ()) -> MorphResult:
        """Runs (or resumes) the search. ``callbacks``: ``callback(out, history rows)`` after every network, on the
        main process (the CLI draws the tree). Runs on one process (a process group's other ranks wait)."""
        if (config.proposer, config.strategy) != (self.proposer, self.name):
            config = replace(config, proposer=self.proposer, strategy=self.name)
        config.validate()
        train_set, val_set, info = data
        result = None
        if distributed.context(config.device).is_main:
            with distributed.alone():
                result = _Search(config, train_set, val_set, info, distributed.context(config.device), resume,
                                 progress, callbacks).run()
        return distributed.broadcast_object(result)


class MorphRandom(MorphSearch):
    name, proposer = "morph-random", "random"


class MorphBfs(MorphSearch):
    name, proposer = "morph-bfs", "bfs"


class _Search:
    def __init__(self, config: MorphConfig, train_set, val_set, info, ctx, resume, progress, callbacks):
        self.config, self.train_set, self.val_set, self.info, self.ctx = config, train_set, val_set, info, ctx
        self.progress, self.callbacks = progress, callbacks
        self.out = config.out
        self.models = os.path.join(self.out, "models")
        self.history_path = os.path.join(self.out, "history.csv")
        if resume:
            if not os.path.exists(self.history_path):
                raise MorphError(f"out: cannot resume {self.out}: no history.csv (not a morph search run)")
            self.rows = _read_history(self.history_path)
        else:
            if os.path.exists(self.history_path) and not config.overwrite:
                raise MorphError(f"out: {self.out} holds a search already; continue it with --resume {self.out}, "
                                 f"or give --overwrite true to start again there")
            if os.path.isdir(self.models):
                shutil.rmtree(self.models)
            self.rows = []
        os.makedirs(self.models, exist_ok=True)
        write_json_atomic(config.to_dict(), os.path.join(self.out, "config.json"))
        self.observations = [Observation(r["model_id"], self._load(r["model_id"])[0], r["val_acc"])
                             for r in self.rows]

    # ---------------------------------------------------------------- model files
    def _path(self, model_id: int) -> str:
        return os.path.join(self.models, f"{model_id}.pt")

    def _load(self, model_id: int) -> Tuple[Spec, dict]:
        state, problem = read_checkpoint(self._path(model_id))
        if problem:
            raise MorphError(f"out: cannot resume {self.out}: {problem}")
        try:
            return Spec.from_json(state["spec"]), state["model"]
        except (KeyError, MorphSpecError) as error:
            raise MorphError(f"out: cannot resume {self.out}: {self._path(model_id)}: {error}") from None

    def _net(self, model_id: int) -> MorphNet:
        spec, weights = self._load(model_id)
        net = MorphNet(spec)
        net.load_state_dict(weights)
        return net

    # ---------------------------------------------------------------- steps
    def _train(self, model_id: int, net: MorphNet) -> Tuple[float, int, float]:
        """(best validation accuracy, epochs run, seconds); the best weights saved in models/<id>.pt."""
        config = replace(self.config, out=os.path.join(self.models, str(model_id)), overwrite=True,
                         seed=seed_for(self.config.seed, model_id) % 2 ** 31)
        start = time.perf_counter()
        task = ChildTraining(config, net, self.train_set, self.val_set, self.ctx)
        rows = fit(task, progress=False)
        net.load_state_dict(task.best_state)
        save_atomic(dict(spec=net.spec.to_json(), model=net.state_dict(), val_acc=task.best_acc, epoch=len(rows)),
                    self._path(model_id))
        checkpoint = os.path.join(config.out, "checkpoint.pt")
        if os.path.exists(checkpoint):  # the last epoch's; the best epoch's weights are models/<id>.pt
            os.remove(checkpoint)
        return task.best_acc, len(rows), time.perf_counter() - start

    def _spent(self) -> float:
        return sum(r["train_s"] + r["choose_s"] for r in self.rows)

    def _done(self) -> bool:
        c = self.config
        return self._spent() >= 60.0 * c.budget or (c.models is not None and len(self.rows) >= c.models)

    def _record(self, model_id: int, parent, chain: str, net: MorphNet, acq: float, choose_s: float) -> None:
        acc, epochs, train_s = self._train(model_id, net)
        row = dict(model_id=model_id, parent=parent, morphisms=chain, params=net.num_params(), val_acc=acc,
                   acquisition=acq, epochs=epochs, train_s=train_s, choose_s=choose_s)
        self.rows.append(row)
        self.observations.append(Observation(model_id, net.spec, acc))
        _write_history(self.history_path, self.rows)
        best = max(self.rows, key=lambda r: r["val_acc"])
        if best is row:
            shutil.copyfile(self._path(model_id), os.path.join(self.out, "best.pt"))
            write_json_atomic(dict(model_id=model_id, val_acc=acc, spec=net.spec.to_dict()),
                              os.path.join(self.out, "best.json"))
            write_json_atomic(dict(genotype=net.spec.to_dict(), source=f"morph-{self.config.proposer} model "
                                                                         f"{model_id}"),
                              os.path.join(self.out, "genotype.json"))
        for callback in self.callbacks:
            callback(self.out, self.rows)

    def run(self) -> MorphResult:
        c = self.config
        pbar = bar(None, f"morph-{c.proposer}", self.progress, total=round(60 * c.budget), unit="s")
        pbar.update(round(self._spent()))
        if not self.rows:
            seed_everything(c.seed)
            size, one_row = input_form(self.info)
            net = MorphNet.initial(self.info.in_channels, self.info.num_classes, c.width, size, one_row=one_row)
            self._record(1, None, "initial", net, math.nan, 0.0)
            pbar.update(round(self.rows[-1]["train_s"]))
        while not self._done():
            step = len(self.rows)
            start = time.perf_counter()
            proposal = propose(c.proposer, self.observations, make_generator(c.seed, step, _CHOOSE), c.neighbours,
                               lambda spec: spec.num_params() <= c.max_params, c.max_width, c.seed, c.chain or None)
            choose_s = time.perf_counter() - start
            if proposal is None:
                break
            net = self._net(proposal.father)
            noise = make_generator(c.seed, step, _NOISE)
            for m in proposal.morphisms:
                net = net.morph(m, noise, c.noise)
            model_id = max(r["model_id"] for r in self.rows) + 1
            self._record(model_id, proposal.father, "; ".join(str(m) for m in proposal.morphisms), net,
                         proposal.acquisition, choose_s)
            pbar.update(round(self.rows[-1]["train_s"] + choose_s))
            pbar.set_postfix(models=len(self.rows), best=f"{max(r['val_acc'] for r in self.rows):.3f}")
        pbar.close()
        return self._finish()

    def _finish(self) -> MorphResult:
        best = max(self.rows, key=lambda r: r["val_acc"])
        net = self._net(best["model_id"]).to(self.ctx.device)
        _, test, _ = self.config.load_data("train_test")
        _, test_acc = evaluate(net, net, eval_loader(test, self.config.batch_size, self.ctx), self.ctx.device)
        spent = self._spent()
        choose = sum(r["choose_s"] for r in self.rows)
        write_json_atomic(dict(best_model=best["model_id"], val_acc=best["val_acc"], test_acc=test_acc,
                               params=best["params"], models=len(self.rows), seconds=spent, choose_seconds=choose,
                               choose_fraction=choose / max(spent, 1e-9), strategy=f"morph-{self.config.proposer}"),
                          os.path.join(self.out, "summary.json"))
        return MorphResult(net.spec, best["val_acc"], best["model_id"], test_acc, self.rows, spent, choose)
