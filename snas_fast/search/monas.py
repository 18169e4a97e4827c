"""MONAS (Hsu et al. 2018): multi-objective search by an RL controller whose reward mixes accuracy and a cost.

An LSTM :class:`~snas_fast.search.controller.Controller` emits an architecture one decision at a time (the space's
:meth:`~snas_fast.spaces.SearchSpace.decisions`: on DARTS's, per node two inputs and two ops in the ``top2`` form,
one op per edge in ``edge_all``; on the graph space, every link's node and edge operation) and is trained by
REINFORCE (moving-average baseline, entropy bonus). A child's accuracy comes from a weight-shared supernet trained
along the way, ENAS-style: every training step runs one path drawn from the controller (only that path: the
supernet's hard path), and after each epoch the controller takes ``controller_steps`` updates, each scoring one
sampled child with the shared weights on one search-validation batch (eval mode). With ``child_train_epochs E``
each child is instead trained from scratch ``E`` epochs with the retraining recipe (MONAS's own protocol; slow).
The cost is the child's ``objective`` in the search network, one of the space's
:meth:`~snas_fast.spaces.SearchSpace.costs` (DARTS: params, FLOPs or MAC,
:func:`~snas_fast.spaces.darts.costs.genotype_cost`, or its latency predicted by a measured table, ``snas-fast
latency-table``; the graph space: params). The reward is one of :mod:`snas_fast.search.rewards`; ``cost_ref`` and
``budget`` default to the mean cost of 100 genotypes drawn from the space's prior (the seed's), so ``a`` and ``p``
are unit-free.

At the end ``archs`` children are drawn from the controller, plus its greedy one; each is scored on the whole
search-validation split (shared weights, or training) and the highest reward is the result. The supernet, the
controller with its optimiser and baseline, and every reward are in the checkpoint: a resumed run is the
uninterrupted one. On a tabular space (a benchmark table) there is no supernet: the controller queries the table
``archs`` times, one REINFORCE step per answer (:class:`MonasQueries`).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import torch

from .. import data as datasets
from ..engine import distributed
from ..engine.config import RunError, setting
from ..engine.data import eval_loader
from ..engine.loop import fit
from ..engine.rundir import RunDir
from ..engine.seeds import make_generator
from .base import CandidateSearch, Strategy, seen_key, unseen
from .controller import Controller, Reinforce
from .rewards import REWARDS, RewardSettings, reward
from .rsws import RswsTraining, SharedWeightsConfig, shared_weight_accuracy

__all__ = ["CostModel", "Monas", "MonasConfig", "MonasError", "MonasResult", "OBJECTIVES"]

#: the costs a child can be charged: the columns of the cost tables, or a measured latency table
OBJECTIVES = ("params", "flops", "mac", "latency")


class MonasError(RunError):
    """A MONAS search that cannot start or go on; one-line message."""


@dataclass
class MonasConfig(SharedWeightsConfig):
    """The supernet's training (:class:`~snas_fast.search.rsws.SharedWeightsConfig`), the controller, the reward."""

    Error = MonasError

    out: str = setting("runs/monas", "run directory")
    archs: int = setting(20, "children drawn from the trained controller at the end (plus its greedy one); on a "
                             "tabular space: the queries, one REINFORCE step each")
    objective: Optional[str] = setting(None, "the cost: one of the space's (darts: params, flops, mac of the child's "
                                             "edges; gnn: params) or latency (darts, from --latency-table); default: "
                                             "mac where the space counts it, else params", kind=str,
                                       choices=OBJECTIVES)
    reward: str = setting("mixed", "reward (snas_fast.search.rewards)", choices=REWARDS)
    a: float = setting(0.9, "mixed: weight of accuracy; 1 - a weighs cost / cost_ref")
    cost_ref: Optional[float] = setting(None, "mixed: the cost unit (None: mean cost of 100 random children)",
                                        kind=float)
    budget: Optional[float] = setting(None, "constrained: the budget; mnas: the target (None: as cost_ref)",
                                      kind=float)
    p: float = setting(1.0, "constrained: penalty per unit of cost / budget - 1 past the budget")
    w: float = setting(-0.07, "mnas: exponent of cost / target")
    controller_steps: int = setting(20, "controller updates after each epoch (one child each)")
    controller_lr: float = setting(5e-3, "controller: Adam learning rate")
    controller_hidden: int = setting(64, "controller: LSTM units")
    baseline_decay: float = setting(0.95, "REINFORCE: decay of the moving-average baseline")
    entropy_weight: float = setting(1e-3, "REINFORCE: weight of the entropy bonus")
    child_train_epochs: int = setting(0, "0: children scored with the shared weights; E: each trained E epochs")

    def validate(self) -> None:
        super().validate()
        self.check_ints(("archs",), 1)
        self.check_ints(("controller_steps", "controller_hidden"), 1)
        self.check_ints(("child_train_epochs",), 0)
        if not 0.0 <= self.a <= 1.0:
            raise MonasError(f"a: expected a weight in [0, 1], got {self.a}")
        for name in ("cost_ref", "budget", "controller_lr"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise MonasError(f"{name}: expected a number > 0, got {value!r}")
        if not 0.0 <= self.baseline_decay < 1.0:
            raise MonasError(f"baseline_decay: expected a number in [0, 1), got {self.baseline_decay}")
        settings = self.space_object().settings
        reads_table = settings is not None and "latency_table" in settings.__dataclass_fields__
        if self.objective == "latency" and reads_table and not self.latency_table:  # a table's latency is its own
            raise MonasError("latency_table: objective latency needs a table (snas-fast latency-table)")


class CostModel:
    """The cost of a child: its ``objective``, one of the space's :meth:`~snas_fast.spaces.SearchSpace.costs` in the
    network of the space's search size (DARTS: ``latency`` too, predicted by its ``--latency-table``)."""

    def __init__(self, objective: Optional[str], space):
        self.space, self.objective = space, objective

    def __call__(self, genotype) -> float:
        """Its cost; 0 where the space counts none (``objective`` None): the reward is then accuracy alone."""
        return 0.0 if self.objective is None else float(self.space.costs(genotype)[self.objective])


def objective_of(config, space) -> Optional[str]:
    """``config.objective``, or the space's MAC where it counts it, else its params (None: the space counts no cost,
    and none was asked for); MonasError naming the costs the space has for an objective it lacks."""
    try:
        probe = space.costs(space.sample(make_generator(config.seed, 0x70726F62)))  # "prob": one draw, its keys
    except ValueError as error:  # a latency table of another network
        raise MonasError(str(error)) from None
    if not probe and config.objective is None:
        return None
    objective = config.objective or ("mac" if "mac" in probe else "params")
    if objective not in probe:
        hint = " (give --latency-table)" if objective == "latency" and "mac" in probe else ""
        raise MonasError(f"objective: space {space.name} counts {', '.join(probe) or 'no cost'}{hint}, got "
                         f"{objective!r}")
    return objective


def reference_cost(cost: CostModel, space, seed: int) -> float:
    """The mean cost of 100 architectures drawn from ``space``'s prior (the seed's): ``cost_ref`` and ``budget``
    where the config leaves them at None."""
    gen = make_generator(seed, 0x72656663)  # "refc"
    return sum(cost(space.sample(gen)) for _ in range(100)) / 100


def reward_settings(config: MonasConfig, cost: CostModel, space) -> RewardSettings:
    """The reward of ``config`` with its defaults filled in (:func:`reference_cost`)."""
    ref = config.cost_ref or reference_cost(cost, space, config.seed) or 1.0  # 1.0: a space that counts no cost
    return RewardSettings(config.reward, config.a, ref, config.budget or ref, config.p, config.w)


class MonasTraining(RswsTraining):
    """The shared weights trained on the controller's paths; after each epoch, the controller's updates."""

    def __init__(self, config: MonasConfig, data, ctx, space):
        super().__init__(config, data, ctx, space)
        self.controller = Controller([d.size for d in space.decisions()], config.controller_hidden)
        self.reinforce = Reinforce(self.controller, config.controller_lr, config.baseline_decay,
                                   config.entropy_weight)
        self.objective = objective_of(config, space)
        self.cost = CostModel(self.objective, space)
        self.settings = reward_settings(config, self.cost, space)
        gen = make_generator(config.seed, 0x76616C62)  # "valb": one fixed order of the validation batches
        order = torch.randperm(len(self.val_set), generator=gen)
        self.val_loader = eval_loader(datasets.subset(self.val_set, order.tolist()), config.batch_size, ctx,
                                      config.num_workers)
        self.val_batches = None
        self.rewards: List[dict] = []  # every controller sample: epoch, step, acc, cost, reward, baseline
        self.data = data

    def reference_cost(self) -> float:
        return reference_cost(self.cost, self.space, self.config.seed)

    def state_dict(self) -> dict:
        return dict(super().state_dict(), reinforce=self.reinforce.state_dict(), rewards=self.rewards)

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.reinforce.load_state_dict(state["reinforce"])
        self.rewards = list(state["rewards"])

    def draw(self):
        with torch.no_grad():
            choices = self.controller.sample(self.generator)[0]
        return self.space.from_choices(choices)

    def accuracy(self, genotype, whole: bool = False, name: str = "") -> float:
        """Search-validation accuracy of a child: shared weights on one batch (``whole``: the whole split), or
        short training (``child_train_epochs``)."""
        config = self.config
        if config.child_train_epochs > 0:
            from .evaluators import TrainedEvaluator
            from ..engine.retrain import TrainConfig

            folder = os.path.join(config.out, "children")
            train_config = config.carried_to(TrainConfig, epochs=config.child_train_epochs, drop_path=0.0,
                                             out=folder, genotype="monas", overwrite=True)
            return TrainedEvaluator(train_config, self.data, folder).trained_score(genotype, name)
        if whole:
            return shared_weight_accuracy(self.model, self.space, genotype, self.val_loader, self.ctx.device)
        if not self.val_batches:
            self.val_batches = list(self.val_loader)
        batch = self.val_batches[len(self.rewards) % len(self.val_batches)]
        return shared_weight_accuracy(self.model, self.space, genotype, [batch], self.ctx.device)

    def end_epoch(self, epoch: int) -> Dict[str, object]:
        row = super().end_epoch(epoch)
        gen = make_generator(self.config.seed, epoch, 0x6D6F6E61)  # "mona"
        mine = []
        for step in range(self.config.controller_steps):
            self.controller.train()
            choices, log_p, entropy = self.controller.sample(gen)
            g = self.space.from_choices(choices)
            acc, cost = self.accuracy(g, name=f"e{epoch:03d}s{step:03d}"), self.cost(g)
            r = reward(self.settings, acc, cost)
            advantage = self.reinforce.step(r, log_p, entropy)
            mine.append(dict(epoch=epoch + 1, step=step, acc=acc, cost=cost, reward=r, advantage=advantage,
                             entropy=entropy.detach().item(), baseline=self.reinforce.baseline))
            self.rewards.append(mine[-1])
        mean = {k: sum(m[k] for m in mine) / len(mine) for k in ("acc", "cost", "reward", "entropy")}
        return dict(row, child_acc=mean["acc"], child_cost=mean["cost"], reward=mean["reward"],
                    controller_entropy=mean["entropy"], baseline=self.reinforce.baseline)

    def describe(self, row: dict) -> str:
        return (f"train_acc {row['train_acc']:.3f} child_acc {row['child_acc']:.3f} cost {row['child_cost']:.4g} "
                f"reward {row['reward']:.4f} entropy {row['controller_entropy']:.2f}")


@dataclass
class MonasResult:
    genotype: object
    score: float  # the reward of the chosen child on the whole search-validation split
    acc: float = math.nan
    cost: float = math.nan
    candidates: List[dict] = field(default_factory=list)
    rewards: List[dict] = field(default_factory=list)  # every controller sample during the search
    model: object = None
    seconds: float = 0.0


#: on a table, the controller's draws of an architecture queried before: drawn again up to this many times
REDRAWS = 10


class MonasQueries(CandidateSearch):
    """MONAS on a benchmark table: each of ``archs`` queries is one architecture drawn from the controller, and its
    answer (the table's validation metric, with the cost of ``objective``) is one REINFORCE step before the next
    draw; a draw queried before is drawn again, up to :data:`REDRAWS` times (then queried again). The controller
    is a function of the seed and the answers so far; the best answer is the result."""

    name = "monas"
    config_class = MonasConfig
    needs = ("query", "decisions")
    stream = 0x6D6F6E71  # "monq"

    def start(self, config: MonasConfig, space, generator) -> None:
        with torch.random.fork_rng():
            torch.manual_seed(config.seed)
            self.controller = Controller([d.size for d in space.decisions()], config.controller_hidden)
        self.reinforce = Reinforce(self.controller, config.controller_lr, config.baseline_decay,
                                   config.entropy_weight)
        self.cost = CostModel(objective_of(config, space), space)
        self.settings = reward_settings(config, self.cost, space)
        self.learned = 0

    def propose(self, config: MonasConfig, space, history, generator):
        for arch, acc in history[self.learned:]:  # one REINFORCE step per answer not yet learned from
            _, log_p, entropy = self.controller.evaluate(space.to_choices(arch))
            self.reinforce.step(reward(self.settings, acc, self.cost(arch)), log_p, entropy)
        self.learned = len(history)
        seen = {seen_key(space, a) for a, _ in history}
        arch = None
        for _ in range(REDRAWS):
            with torch.no_grad():
                choices = self.controller.sample(generator)[0]
            try:
                arch = space.from_choices(choices)
            except ValueError:  # a draw the space refuses (NAS-Bench-Graph's four skips): drawn again
                continue
            if seen_key(space, arch) not in seen:
                break
        return arch if arch is not None else unseen(space, history, lambda: space.sample(generator))


class Monas(Strategy):
    name = "monas"
    config_class = MonasConfig
    needs = ("data", "decisions", "supernet")

    def missing(self, space):
        if space.lacks("query") is None:  # a table: the controller queries it (MonasQueries)
            return MonasQueries().missing(space)
        return super().missing(space)

    def run(self, config: MonasConfig, data, resume: bool = False, progress: bool = True, callbacks: Sequence = ()):
        """The search (a :class:`MonasResult`); on a tabular space :class:`MonasQueries`' (a
        :class:`~snas_fast.search.base.CandidateResult`)."""
        if config.space_object().lacks("query") is None:
            return MonasQueries().run(config, data, resume, progress, callbacks)
        config.validate()
        ctx = distributed.context(config.device)
        space = self.space_for(config, data[2])
        start = time.perf_counter()
        task = MonasTraining(config, data, ctx, space)
        fit(task, resume, progress, callbacks)
        gen = make_generator(config.seed, 0x66696E61)  # "fina"
        with torch.no_grad():
            drawn = [task.controller.greedy()] + [task.controller.sample(gen)[0] for _ in range(config.archs)]
        candidates, seen = [], set()
        for k, choices in enumerate(drawn):
            g = space.from_choices(choices)
            key = seen_key(space, g)
            if key in seen:
                continue
            seen.add(key)
            acc, cost = task.accuracy(g, whole=True, name=f"final{k:03d}"), task.cost(g)
            candidates.append(dict(genotype=g, acc=acc, cost=cost, reward=reward(task.settings, acc, cost),
                                   greedy=k == 0))
        best = max(candidates, key=lambda c: c["reward"])
        run = RunDir(config.out, ctx)
        run.write_json("candidates.json", [dict(c, genotype=space.to_dict(c["genotype"])) for c in candidates])
        run.write_json("rewards.json", task.rewards)
        run.write_json("genotype.json", dict(genotype=space.to_dict(best["genotype"]), score=best["reward"],
                                             acc=best["acc"], cost=best["cost"], objective=task.objective,
                                             reward=vars(task.settings), source="monas"))
        return MonasResult(best["genotype"], best["reward"], best["acc"], best["cost"], candidates, task.rewards,
                           task.model, time.perf_counter() - start)
