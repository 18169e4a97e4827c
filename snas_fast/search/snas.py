"""SNAS (Xie et al. 2019): the sampling policy and the search.

- :class:`SnasSampler`, the policy: one Gumbel-softmax sample ``Z = softmax((log_alpha + g) / tau)`` per step and
  cell type, per cell or per example (``granularity``), soft or hard (only the sampled candidate of each edge runs,
  with GDAS's straight-through or DSNAS's score-function gradient for ``log_alpha``). Changing the granularity is an
  edit of this class alone: the supernet takes one weight tensor per cell and knows nothing of samples.
- :func:`gumbel_noise`: the noise of a step as a function of (seed, epoch, step, rank): the same on every rank
  (``"shared"``) or each rank its own (``"per-rank"``, SNAS's ``nsample = N``).
- :class:`SnasSupernet` (``snas_fast.Supernet``): the DARTS supernet with a sampler attached, ``forward(x, tau)``.
- :class:`SearchConfig`, :data:`RECIPES`, :func:`search`: the search as a task of the one training loop
  (:func:`snas_fast.engine.loop.fit`) on any space with a one-shot supernet (:class:`~snas_fast.spaces.OneShot`):
  single level (weights and log_alpha from one backward) or DARTS's first-order bi-level, the space's resource
  penalty, the temperature schedule, warm-up, drop-path, and per-epoch evaluation of one sampled network and of
  the derived child. First-order DARTS is this search with softmax weights (:mod:`snas_fast.search.darts`).

Run directory (``config.out``):
    config.json       the full configuration (``--resume`` reads it back)
    metrics.jsonl     one JSON line per epoch: losses and accuracies (the supernet's are those of one network
                      sampled at the epoch's tau, the child's of the derived cells; both on search-validation, with
                      BatchNorm recalibrated), tau, and how far the architecture moved (:func:`arch_convergence`)
    genotype.json     the current derivation, plus ``<name>_alpha`` per ``log_alpha`` (softmax(log_alpha): DARTS's
                      ``normal_alpha`` / ``reduce_alpha``, 14x8) and ``initial_genotype`` (the untrained supernet's
                      derivation)
    checkpoint.pt     model, optimizers, schedule; written atomically after every epoch
    alphas.png, cell plots, curves.png   (``snas-fast search``: :mod:`snas_fast.viz`)

Randomness is a function of (seed, epoch, step, rank) alone, so a resumed run draws exactly what an uninterrupted
one draws. In a process group (torchrun) the search is data-parallel; see :func:`search`.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_bool, check_tau
from ..engine import distributed
from ..engine.config import RunError, TrainingConfig, setting
from ..engine.data import eval_loader, train_loader
from ..engine.loop import Callback, EpochEnd, Task, drop_path_prob, evaluate, fit, recalibrate_bn
from ..engine.seeds import make_generator, seed_everything
from ..ops import reference
from ..spaces.darts.space import DartsSpace
from ..spaces.darts.supernet import Supernet
from . import convergence, schedules
from .base import SearchWarning, Strategy

__all__ = ["ESTIMATORS", "GRANULARITIES", "GUMBEL_SAMPLE", "RECIPES", "SearchConfig", "SearchError", "SearchResult",
           "SearchWarning", "Snas", "SnasSampler", "SnasSupernet", "gumbel", "gumbel_noise", "search"]

GRANULARITIES = ("step", "cell", "example")
ESTIMATORS = ("st", "dsnas")
#: Gumbel-sample policies across ranks (:func:`gumbel_noise`).
GUMBEL_SAMPLE = ("shared", "per-rank")
TAU_SCHEDULES = ("linear", "exp")


class SearchError(RunError):
    """A search that cannot go on (non-finite loss, unusable configuration); its message is one line."""


# ------------------------------------------------------------------------------------------------------------
# The Gumbel sample
# ------------------------------------------------------------------------------------------------------------
def gumbel(shape: Sequence[int], generator: Optional[torch.Generator] = None, device=None) -> Tensor:
    """Gumbel(0, 1) noise ``-log(-log u)`` of ``shape``, float32, with ``u`` uniform clamped to
    ``[1e-10, 1 - 1e-7]`` (finite for every draw)."""
    u = torch.rand(tuple(shape), generator=generator, dtype=torch.float32, device=device).clamp_(1e-10, 1.0 - 1e-7)
    return -torch.log(-torch.log(u))


_NOISE_STREAM = 0x6E6F6973  # "nois": keeps the Gumbel stream apart from other uses of seed_for


def gumbel_noise(shapes: Sequence[Sequence[int]], seed: int, epoch: int, step: int, ctx: distributed.Context,
                 policy: str = "shared", phase: int = 0, per_example: bool = False,
                 device: Optional[torch.device] = None) -> List[Tensor]:
    """Gumbel noise ``g = -log(-log u)`` of each shape in ``shapes`` for step ``step`` of epoch ``epoch``
    (:func:`gumbel`), float32 on ``device``.

    ``policy="shared"``: the same noise on every rank; ``"per-rank"``: the rank joins the seed. ``per_example``
    (shapes ``[B, ...]``, one sample per example) with ``"shared"``: the noise of the global batch
    ``[world_size * B, ...]`` is drawn and this rank takes rows ``rank::world_size``, the rows of the examples a
    ``DistributedSampler`` gives it. ``phase`` separates streams within a step (e.g. a bi-level arch step).
    """
    if policy not in GUMBEL_SAMPLE:
        raise ValueError(f"policy: expected one of {list(GUMBEL_SAMPLE)}, got {policy!r}")
    rank_part = ctx.rank + 1 if policy == "per-rank" else 0
    gen = make_generator(_NOISE_STREAM, seed, epoch, step, phase, rank_part)
    out = []
    for shape in shapes:
        shape = tuple(int(s) for s in shape)
        shared_rows = per_example and policy == "shared" and ctx.world_size > 1
        draw = (shape[0] * ctx.world_size,) + shape[1:] if shared_rows else shape
        g = gumbel(draw, gen)
        if shared_rows:
            g = g[ctx.rank::ctx.world_size]
        out.append(g.to(device) if device is not None else g)
    return out


@dataclass(frozen=True)
class SnasSampler:
    """SNAS's sampling policy. ``granularity``: one sample per step and cell type (``"step"``, SNAS's default), per
    cell (``"cell"``) or per example (``"example"``); ``hard``: one-hot samples, only the sampled candidate of each
    edge runs; ``estimator``: the ``log_alpha`` gradient of hard samples, ``"st"`` (GDAS's straight-through: the
    sampled path's weight is ``1 - z_k.detach() + z_k``) or ``"dsnas"`` (DSNAS's score function: its weight is
    ``exp(log p_k - log p_k.detach())`` with ``p = softmax(log_alpha)``, so ``d loss / d log_alpha =
    (d loss / d weight_k) * grad log p_k``). ``gumbel=False``: no sample, the weights are ``softmax(log_alpha)``
    (first-order DARTS; ``tau`` and the noise unused).

    It works on any one-shot supernet (:class:`~snas_fast.spaces.OneShot`) per step; per cell and per example on
    DARTS's (a supernet with ``cell_types``)."""

    granularity: str = "step"
    hard: bool = False
    estimator: str = "st"
    gumbel: bool = True

    def __post_init__(self):
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"sampling: expected one of {GRANULARITIES}, got {self.granularity!r}")
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator: expected one of {ESTIMATORS}, got {self.estimator!r}")

    def check(self, model) -> None:
        """ValueError (one line) when ``model`` cannot take this sampler's granularity."""
        if self.granularity != "step" and not hasattr(model, "cell_types"):
            raise ValueError(f"sampling: {type(model).__name__} takes one sample per step, got "
                             f"{self.granularity!r}")

    def noise_shapes(self, model, batch: int) -> List[Tuple[int, ...]]:
        """The Gumbel-noise shapes, one per ``log_alpha`` (DARTS's ``[normal, reduce]``): its shape (step, e.g.
        ``[14, K]``), ``[cells of the type, 14, K]`` (cell) or ``[batch, 14, K]`` (example)."""
        if self.granularity == "step":
            return [tuple(la.shape) for la in model.arch_parameters()]
        shapes = []
        for n, la in zip(model.cell_counts(), model.arch_parameters()):
            lead = {"cell": (max(n, 1),), "example": (batch,)}[self.granularity]
            shapes.append(lead + tuple(la.shape))
        return shapes

    def sample(self, model, tau: float, noise=None, batch: int = 1) -> Tuple[Tensor, ...]:
        """Z, one per ``log_alpha`` (DARTS's normal and reduce cells), in :meth:`noise_shapes`:
        ``softmax((log_alpha + g) / tau)``; if ``hard``, the one-hot ``argmax`` with the gradient of ``estimator``.
        ``noise``: the ``g`` of each (None: drawn). ``tau``: a finite real > 0
        (:func:`snas_fast._checks.check_tau`). Without ``gumbel``: ``softmax(log_alpha)``."""
        if not self.gumbel:
            return tuple(F.softmax(la, dim=-1) for la in model.arch_parameters())
        tau = check_tau(tau)
        out = []
        for i, (la, shape) in enumerate(zip(model.arch_parameters(), self.noise_shapes(model, batch))):
            if noise is None:
                g = gumbel(shape, device=la.device)
            else:
                g = noise[i]
                if tuple(g.shape) != shape:
                    raise ValueError(f"noise[{i}]: expected shape {shape} for sampling={self.granularity!r}, "
                                     f"got {tuple(g.shape)}")
            z = reference.gumbel_softmax(la, tau, g.to(la))
            if not self.hard:
                out.append(z)
            elif self.estimator == "st":
                out.append(reference.straight_through(z))
            else:  # DSNAS: one-hot values, the score function's gradient
                one_hot = F.one_hot(z.detach().argmax(-1), z.shape[-1]).to(z.dtype)
                log_p = F.log_softmax(la, dim=-1)
                out.append(one_hot * (log_p - log_p.detach()).exp())
        return tuple(out)

    def per_cell(self, model: Supernet, z: Tuple[Tensor, Tensor]):
        """``(weights, choices)`` for :meth:`Supernet.run`: each cell's rows of its type's sample, and (hard) the
        sampled columns, read once per step (one device sync)."""
        choices = [zt.detach().argmax(-1).tolist() for zt in z] if self.hard else None
        weights, cell_choices, seen = [], [], [0, 0]
        for kind in model.cell_types():
            w, choice = z[kind], (choices[kind] if self.hard else None)
            if self.granularity == "cell":
                w = w[seen[kind]]
                choice = choice[seen[kind]] if self.hard else None
            elif self.granularity == "example" and self.hard:
                choice = [list(col) for col in zip(*choice)]  # [B][14] -> [14][B]
            # "example": w is [B, 14, K] and edge e mixes with the per-example rows w[:, e]
            seen[kind] += 1
            weights.append(w)
            cell_choices.append(choice)
        return weights, (cell_choices if self.hard else None)

    def forward(self, model, x, tau: float, noise=None) -> Tuple[Tensor, Tuple[Tensor, ...]]:
        """``(logits [B, classes], z)`` of ``model`` under a sample at ``tau`` (``z``: one per ``log_alpha``)."""
        z = self.sample(model, tau, noise, batch=_examples(x))
        if self.granularity == "step":
            logits = model.run_arch(x, z, [zt.detach().argmax(-1).tolist() for zt in z] if self.hard else None)
        else:
            weights, choices = self.per_cell(model, z)
            logits = model.run(x, weights, choices)
        if self.hard:  # a NaN sample reaches the logits (and the loop's NaN stop) even when `none` was drawn
            logits = logits + sum(zt.detach().sum() for zt in z) * 0
        return logits, z

    def penalty_sample(self, z: Tensor) -> Tensor:
        """The sample the resource penalty prices: per example, the batch's mean sample."""
        return z.mean(0) if self.granularity == "example" else z


class SnasSupernet(Supernet):
    """:class:`~snas_fast.spaces.darts.supernet.Supernet` with SNAS's sampler attached (``snas_fast.Supernet``).

    Args: those of the supernet, and ``sampling`` (the :class:`SnasSampler` granularity) and ``estimator``.

    ``forward(x, tau, hard=False, noise=None)`` takes ``x`` ``[B, in_channels, H, W]`` and returns logits
    ``[B, num_classes]``; ``noise``: a pair of Gumbel-noise tensors for (normal, reduce) in
    :meth:`SnasSampler.noise_shapes`. The sample used is kept in ``last_sample`` (normal, reduce).
    """

    def __init__(self, C: int, num_classes: int, layers: int, in_channels: int = 3, steps: int = 4,
                 multiplier: int = 4, stem_multiplier: int = 3, mixed: str = "fused", pool_bn: bool = False,
                 sampling: str = "step", estimator: str = "st", space: Optional[DartsSpace] = None,
                 memory_format=torch.contiguous_format, partial_channels: int = 1, edge_normalization: bool = False):
        samplers = (SnasSampler(sampling, False, estimator), SnasSampler(sampling, True, estimator))  # checked
        super().__init__(C, num_classes, layers, in_channels, steps, multiplier, stem_multiplier, mixed, pool_bn,
                         space, memory_format, partial_channels, edge_normalization)
        self._samplers = samplers  # soft, hard: made once (a torch.compile'd forward traces no construction)
        self.sampling, self.estimator = sampling, estimator
        self.last_sample: Optional[Tuple[Tensor, Tensor]] = None

    def _sampler(self, hard: bool) -> SnasSampler:
        return self._samplers[1] if check_bool("hard", hard) else self._samplers[0]

    def sample(self, tau: float, hard: bool = False, noise=None, batch: int = 1) -> Tuple[Tensor, Tensor]:
        """:meth:`SnasSampler.sample` of this network."""
        return self._sampler(hard).sample(self, tau, noise, batch)

    def forward(self, x: Tensor, tau: float, hard: bool = False, noise=None) -> Tensor:
        logits, self.last_sample = self._sampler(hard).forward(self, x, tau, noise)
        return logits


# ------------------------------------------------------------------------------------------------------------
# Settings
# ------------------------------------------------------------------------------------------------------------
#: Named sets of settings. A field a config leaves at None takes its recipe's value (explicit values win).
#: - ``short`` (the default on images): a search that moves its architecture within the steps a short run has: tau
#:   annealed over the run itself (``tau_epochs`` None), Adam for ``log_alpha`` as in SNAS's multi-GPU recipe (betas
#:   (0.5, 0.999), weight decay 1e-3) at a rate measured on the digits (README, "The search"), and BatchNorm
#:   recalibrated before each evaluation of the supernet and of the child. Sized for the embedded digits.
#: - ``snas-cifar``: SNAS's official single-GPU CIFAR-10 search exactly (snas.md): 150 epochs, 8 cells, C = 16,
#:   SGD 3e-4 for ``log_alpha``, tau linear 1 -> 0.03 over 150 epochs, drop-path 0.3, no recalibration.
#: - ``graph`` (the default on graphs): EGNAS's space searched on the CPU: 10 epochs, Adam at 0.03 for ``log_alpha``,
#:   tau 1 -> 0.1, 5 batches of BatchNorm recalibration (the weights' Adam at 3e-3 is the graphs' default:
#:   :data:`~snas_fast.engine.config.KIND_DEFAULTS`).
#: A recipe outranks the space's defaults (``snas-cifar`` sets DARTS's 8 cells of C = 16; the network size is
#: otherwise the space's search size) and the defaults of the kind of data. It is applied once, when a config is built
#: (``dataclasses.replace`` of ``recipe`` alone changes nothing else); ``tau_epochs`` None under ``snas-cifar`` is its
#: 150 (give the run's epochs to anneal over the run).
RECIPES: Dict[str, Dict[str, object]] = {
    "short": dict(epochs=20, arch_optimizer="adam", arch_lr=0.1, arch_weight_decay=1e-3, tau_epochs=None,
                  drop_path=0.0, bn_recalibration=20, lr_min=0.001, tau_end=0.03),  # the space's search size
    "snas-cifar": dict(epochs=150, layers=8, channels=16, arch_optimizer="sgd", arch_lr=3e-4, arch_weight_decay=0.0,
                       tau_epochs=150, drop_path=0.3, bn_recalibration=0, lr_min=0.001, tau_end=0.03),
    "graph": dict(epochs=10, arch_optimizer="adam", arch_lr=0.03, arch_weight_decay=1e-3, tau_epochs=None,
                  drop_path=0.0, bn_recalibration=5, lr_min=0.0, tau_end=0.1),
    "custom": {},  # every setting given (a config.json written before recipes existed reads back as this)
}
#: The recipe of a space's kind of data when none is named.
DEFAULT_RECIPE = {"images": "short", "graphs": "graph"}

#: The Bag of Tricks for NAS (Elsken et al. 2021) as changes of the ``short`` recipe, one trick each, for ablations:
#: ``snas-fast compare --strategies snas+<name>`` runs SNAS with that one change (a row of the leaderboard). The
#: recipe has BatchNorm recalibration before every evaluation, log_alpha weight decay and the linear schedule, and no
#: weights warm-up; each entry turns one of them over.
TRICKS: Dict[str, Dict[str, object]] = {
    "warmup": dict(warmup_epochs=5),  # log_alpha frozen for the first 5 epochs (a quarter of the recipe's 20)
    "no-bn-recal": dict(bn_recalibration=0),  # evaluations use the running statistics of training
    "tau-exp": dict(tau_schedule="exp"),  # the same tau_start -> tau_end over the run, geometric instead of linear
    "no-arch-wd": dict(arch_weight_decay=0.0),
}


@dataclass
class SearchConfig(TrainingConfig):
    """Every setting of a search. Fields left at None take the value of ``recipe`` (:data:`RECIPES`); the others
    follow the official SNAS recipe (snas.md). ``tau_epochs`` None: the linear schedule spans the run's epochs."""

    Error = SearchError
    roles = ("search", "supernet")

    recipe: Optional[str] = setting(None, "short (moves the architecture within a short run; the default on images, "
                                          "whose values the defaults here show), snas-cifar (SNAS's CIFAR-10 search "
                                          "exactly) or graph (the default on graphs): snas_fast.search.snas.RECIPES; "
                                          "flags given override it", kind=str)
    out: str = setting("runs/search", "run directory")
    epochs: Optional[int] = setting(None, "search epochs", kind=int)
    lr_min: Optional[float] = setting(None, "weights: final learning rate", kind=float)
    drop_path: Optional[float] = setting(None, "drop-path probability on edges (ramped over the epochs)", kind=float)
    sampling: str = setting("step", "one Gumbel sample per step, cell or example (hard: per step, hard; the same "
                                    "as --hard true)", choices=GRANULARITIES + ("hard",))
    hard: bool = setting(False, "one-hot samples: only the sampled candidate of each edge runs")
    estimator: str = setting("st", "log_alpha gradient of hard samples: st (GDAS) or dsnas", choices=ESTIMATORS)
    bilevel: bool = setting(False, "DARTS first-order bi-level updates instead of SNAS's single level")
    arch_optimizer: Optional[str] = setting(None, "log_alpha optimizer: sgd or adam", kind=str, choices=("sgd", "adam"))
    arch_lr: Optional[float] = setting(None, "log_alpha learning rate", kind=float)
    arch_weight_decay: Optional[float] = setting(None, "log_alpha weight decay", kind=float)
    arch_betas: Tuple[float, float] = (0.5, 0.999)
    warmup_epochs: int = setting(0, "weights warm-up: epochs with log_alpha frozen (Bag of Tricks; 0: none)")
    tau_schedule: str = setting("linear", "temperature schedule from --tau-start to --tau-end over --tau-epochs: "
                                          "linear (SNAS) or exp (geometric)", choices=TAU_SCHEDULES)
    tau_start: float = setting(1.0, "initial temperature")
    tau_end: Optional[float] = setting(None, "final temperature", kind=float)
    tau_epochs: Optional[int] = setting(None, "length of the temperature schedule in epochs (None: the run's "
                                              "epochs)", kind=int)
    resource_lambda: float = setting(1.5e-3, "weight of the resource penalty (spaces with a cost model)",
                                     flag="lambda")
    penalty: str = setting("log", "resource penalty form: log or linear (of params, FLOPs, MAC), or latency (expected "
                                  "latency of a measured table, --latency-table, over its value at the uniform sample)",
                           choices=("log", "linear", "latency"))
    bn_recalibration: Optional[int] = setting(None, "training batches that recalibrate BatchNorm before each "
                                                    "evaluation (supernet and child)", kind=int)
    gumbel_sample: str = setting("shared", "torchrun: shared (every rank draws the same architecture sample) or "
                                           "per-rank (each rank its own)", choices=GUMBEL_SAMPLE)

    def default_sources(self):
        from ..spaces import space_names

        if self.recipe is None and self.space in space_names():
            self.recipe = DEFAULT_RECIPE.get(self.space_object().data_kind, "short")
        if self.recipe not in RECIPES:
            raise SearchError(f"recipe: expected one of {', '.join(RECIPES)}, got {self.recipe!r}")
        return [RECIPES[self.recipe]] + super().default_sources()

    def validate(self) -> None:
        unset = [name for name in RECIPES["short"] if name != "tau_epochs" and getattr(self, name) is None]
        if unset:
            raise SearchError(f"{unset[0]}: expected a value (recipe {self.recipe!r} gives none), got None")
        super().validate()  # types and choices of every setting first
        if self.tau_epochs is not None and (isinstance(self.tau_epochs, bool) or not isinstance(self.tau_epochs, int)
                                            or self.tau_epochs < 1):
            raise SearchError(f"tau_epochs: expected an integer >= 1, got {self.tau_epochs!r}")
        if self.penalty == "latency" and not self.latency_table:
            raise SearchError("latency_table: --penalty latency needs a table (snas-fast latency-table)")
        for name in ("bn_recalibration", "warmup_epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise SearchError(f"{name}: expected an integer >= 0, got {value!r}")
        for name in ("arch_lr", "arch_weight_decay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise SearchError(f"{name}: expected a number >= 0, got {value!r}")
        for name in ("tau_start", "tau_end"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value)
                                                                                     and value > 0):
                raise SearchError(f"{name}: expected a temperature > 0, got {value!r}")
        if self.tau_end > self.tau_start:
            raise SearchError(f"tau_end: expected at most tau_start = {self.tau_start}, got {self.tau_end}")

    @classmethod
    def from_dict(cls, d: dict) -> "SearchConfig":
        """The config of ``d``; a ``config.json`` of 0.1 (``tau0``, ``tau_min``, ``tau_rate``, ``exponential``) reads
        as the same linear schedule; its exponential one had a per-epoch rate that no longer exists (an error)."""
        d = dict(d)
        for old, new in (("tau0", "tau_start"), ("tau_min", "tau_end")):
            if old in d:
                d.setdefault(new, d.pop(old))
        rate = d.pop("tau_rate", None)
        if d.get("tau_schedule") == "exponential":
            raise SearchError(f"config: tau_schedule 'exponential' with tau_rate {rate} is no longer a setting; "
                              f"give --tau-schedule exp (tau_start to tau_end over tau_epochs)")
        if "arch_betas" in d:
            d["arch_betas"] = tuple(d["arch_betas"])
        return super().from_dict(d)

    def sampler(self) -> SnasSampler:
        """The sampling policy of these settings: ``--sampling hard`` is one hard sample per step, the same as
        ``--sampling step --hard true``."""
        hard = self.hard or self.sampling == "hard"
        return SnasSampler("step" if self.sampling == "hard" else self.sampling, hard, self.estimator)


# ------------------------------------------------------------------------------------------------------------
# Pieces of the search
# ------------------------------------------------------------------------------------------------------------
def temperature(config: SearchConfig, epoch: int) -> float:
    """The epoch's tau: from ``tau_start`` at epoch 0 to ``tau_end`` at ``tau_epochs`` (the run's epochs if None),
    linearly (SNAS) or geometrically (``exp``: a constant factor per epoch), ``tau_end`` after."""
    length = config.tau_epochs if config.tau_epochs is not None else config.epochs
    if config.tau_schedule == "exp":
        rate = math.log(config.tau_start / config.tau_end) / length
        return schedules.exponential_tau(min(epoch, length), config.tau_start, config.tau_end, rate)
    return schedules.linear_tau(epoch, config.tau_start, config.tau_end, length)


def make_optimizers(model, config: SearchConfig):
    """(the weights' optimiser, SGD or Adam for log_alpha and the edge-normalisation betas, the cosine schedule of the
    weights)."""
    weights, schedule = config.weight_optimizer(model.weight_parameters())
    arch_params = model.arch_parameters() + model.beta_parameters()
    if config.arch_optimizer == "adam":
        arch = torch.optim.Adam(arch_params, config.arch_lr, betas=config.arch_betas,
                                weight_decay=config.arch_weight_decay)
    else:
        arch = torch.optim.SGD(arch_params, config.arch_lr, weight_decay=config.arch_weight_decay)
    return weights, arch, schedule


class SearchStep(nn.Module):
    """The supernet's forward under the sampler and SNAS's resource penalty in one module, what
    DistributedDataParallel wraps: ``forward(x, tau, noise) -> (logits [B, classes], penalty [])``. The penalty is an
    output of the wrapped forward, so DDP sees every path by which ``log_alpha`` gets a gradient. ``penalty``: the
    space's (:meth:`SearchSpace.penalty <snas_fast.spaces.SearchSpace.penalty>`, a function of the sample; its cost
    tables are constants, not buffers for DDP to broadcast), or None: 0."""

    def __init__(self, model: nn.Module, sampler: SnasSampler, penalty: Optional[Callable] = None):
        super().__init__()
        self.model = model
        self.sampler, self.penalty = sampler, penalty

    def forward(self, x, tau: float, noise=None):
        logits, z = self.sampler.forward(self.model, x, tau, noise)
        if self.penalty is None:
            return logits, logits.new_zeros(())
        return logits, self.penalty([self.sampler.penalty_sample(t) for t in z])


def _examples(x) -> int:
    """The examples of a batch: ``x.shape[0]`` of images, 1 for a batch of graphs (its samples are per step)."""
    return x.shape[0] if torch.is_tensor(x) else 1


_EVAL_PHASE = 2  # the noise stream of the network sampled for an epoch's evaluation (0, 1: training steps)


def _forward(model, sampler: SnasSampler, x, tau: Optional[float], noise=None) -> Tensor:
    """Logits of the derived child (``tau`` None) or of the supernet under the sampler's sample at ``tau``: drawn
    afresh (``noise`` None) or from ``noise``, a fixed pair drawn with batch 1 (one example's rows are repeated over
    the batch)."""
    if tau is None:
        return model.forward_child(x)
    if noise is not None and sampler.granularity == "example":
        noise = [g.expand((_examples(x),) + tuple(g.shape[1:])) for g in noise]
    return sampler.forward(model, x, tau, noise)[0]


def arch_convergence(model, initial_choice) -> dict:
    """``{name: stats, ..., "changed_edges": n}``: per ``log_alpha`` (its ``alpha_names``: DARTS's normal and reduce
    cells, the graph space's node and edge operations) :func:`snas_fast.search.convergence.arch_stats` of
    ``softmax(log_alpha)`` over its rows (plus ``"edges"``: the rows), and the number of rows, over all, whose
    derived op differs from ``initial_choice`` (the untrained supernet's argmax columns)."""
    out, changed = {}, 0
    for kind, probs, initial in zip(model.alpha_names, model.alphas(), initial_choice):
        rows = probs.reshape(-1, probs.shape[-1])
        out[kind] = dict(convergence.arch_stats(rows), edges=rows.shape[0])
        changed += convergence.changed_edges(rows, torch.as_tensor(initial).reshape(-1).tolist())
    out["changed_edges"] = changed
    return out


def _flatten(arch: dict) -> dict:
    """:func:`arch_convergence` as flat metric columns: ``normal_entropy``, ``reduce_margin``, ...,
    ``changed_edges``."""
    flat = {f"{kind}_{k}": v for kind, stats in arch.items() if kind != "changed_edges" for k, v in stats.items()
            if k != "edges"}
    flat["changed_edges"] = arch["changed_edges"]
    return flat


def genotype_of_choice(choice, space=None) -> object:
    """The architecture whose rows run the columns ``choice`` (one index list per ``log_alpha``, e.g. DARTS's
    ``(normal [14], reduce [14])``), as ``space`` derives it by its rule (default: DARTS's space, its rule edge_all:
    every row's column)."""
    space = space or DartsSpace()
    K = len(space.primitives)
    return space.derive([F.one_hot(torch.tensor(c), K).double() for c in choice])


def load_search_data(config: SearchConfig):
    """``(train, val, info)`` of the configured dataset, cut to ``data_limit`` examples per split if set (refused
    first, in one line, on a space without a supernet)."""
    return Snas().load_data(config)


# ------------------------------------------------------------------------------------------------------------
# The search
# ------------------------------------------------------------------------------------------------------------
@dataclass
class SearchResult:
    genotype: object
    val_acc: float
    child_val_acc: float
    history: List[dict] = field(default_factory=list)
    model: Optional[nn.Module] = None  # the searched supernet (on every rank, the same weights and log_alpha)
    arch: dict = field(default_factory=dict)  # arch_convergence() at the end: entropy, margins, edges changed
    warning: Optional[str] = None  # convergence.unmoved_warning(), also issued as a SearchWarning
    space: object = None  # the space searched (bound to the run)

    @property
    def score(self) -> float:
        """The strategy's own figure of merit: the derived child's search-validation accuracy."""
        return self.child_val_acc


class SnasSearch(Task):
    """SNAS's search as a task of :func:`snas_fast.engine.loop.fit`, on the one-shot supernet of ``space`` (a space
    bound to the run: :meth:`~snas_fast.engine.config.DataConfig.bound_space`)."""

    bar_columns = ("tau",)
    nan_hint = "lower the learning rates or lambda"

    def __init__(self, config: SearchConfig, data, ctx, space, sampler: Optional[SnasSampler] = None):
        train_set, val_set, info = data
        self.config, self.ctx, self.space = config, ctx, space
        device = ctx.device
        self.sampler = sampler or config.sampler()
        seed_everything(config.seed)
        self.model = space.supernet().to(device)
        try:
            self.sampler.check(self.model)
            penalty = space.penalty(self.model, config.penalty)
        except ValueError as error:
            raise SearchError(str(error)) from None
        if config.sync_bn:
            self.model = distributed.convert_sync_batchnorm(self.model, ctx)
        self.train_loader = train_loader(train_set, config.batch_size, config.seed, ctx, config.num_workers)
        self.val_loader = eval_loader(val_set, config.batch_size, ctx, config.num_workers)
        self.opt_w, self.opt_a, self.schedule = make_optimizers(self.model, config)
        # the derivation of the untrained supernet, what every epoch's cells are compared with
        self.initial_choice = [la.detach().argmax(-1).tolist() for la in self.model.arch_parameters()]
        self.history: List[dict] = []
        self.split_sizes = [len(train_set), len(val_set)]
        self.arch = arch_convergence(self.model, self.initial_choice)
        # DDP broadcasts rank 0's parameters and buffers and averages every gradient, log_alpha's included. A soft
        # sample reaches every parameter; a hard one may leave candidates unrun (find_unused_parameters).
        self.net = distributed.wrap_ddp(SearchStep(self.model, self.sampler, penalty), ctx,
                                        find_unused_parameters=self.sampler.hard)
        self.tau, self.update_arch, self.val_iter = 1.0, True, None

    # -- checkpoint ------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return dict(model=self.model.state_dict(), opt_weights=self.opt_w.state_dict(),
                    opt_arch=self.opt_a.state_dict(), schedule=self.schedule.state_dict(), history=self.history,
                    initial_choice=self.initial_choice, split_sizes=self.split_sizes)

    def load_state_dict(self, state: dict) -> None:
        config = self.config
        if state.get("split_sizes") != self.split_sizes and (config.dataset == "digits" or "split_sizes" in state):
            before = state.get("split_sizes", "unrecorded (made before the digits had a test part)")
            raise SearchError(f"out: cannot resume {config.out}: the checkpoint was made on other data splits (search-train "
                              f"and search-validation sizes {before}, now {self.split_sizes}): start the search "
                              f"again there with --overwrite true, or in another --out")
        self.model.load_state_dict(state["model"])
        self.opt_w.load_state_dict(state["opt_weights"])
        self.opt_a.load_state_dict(state["opt_arch"])
        self.schedule.load_state_dict(state["schedule"])
        self.history = state["history"]
        self.initial_choice = state.get("initial_choice", self.initial_choice)  # the same seeded init either way

    # -- an epoch --------------------------------------------------------------------------------------------
    def begin_epoch(self, epoch: int) -> Dict[str, float]:
        config = self.config
        self.tau = temperature(config, epoch)
        self.model.drop_path_prob = drop_path_prob(config.drop_path, epoch, config.epochs)
        self.update_arch = epoch >= config.warmup_epochs
        self.val_iter = iter(self.val_loader) if config.bilevel else None
        self.net.train()
        return dict(tau=self.tau, lr=self.opt_w.param_groups[0]["lr"])

    def _noise(self, epoch: int, step: int, batch: int, phase: int = 0) -> List[Tensor]:
        return gumbel_noise(self.sampler.noise_shapes(self.model, batch), self.config.seed, epoch, step, self.ctx,
                            self.config.gumbel_sample, phase=phase, per_example=self.sampler.granularity == "example",
                            device=self.ctx.device)

    def _loss(self, x: Tensor, y: Tensor, noise) -> Tuple[Tensor, Tensor, Tensor]:
        """Cross entropy + lambda * the resource penalty under the sample the forward used (SNAS's loss)."""
        logits, penalty = self.net(x, self.tau, noise)
        return F.cross_entropy(logits, y) + self.config.resource_lambda * penalty, logits, penalty

    def loss(self, x: Tensor, y: Tensor, epoch: int, step: int):
        if self.config.bilevel and self.update_arch:  # DARTS first order: log_alpha on a held-out batch
            try:
                xv, yv = next(self.val_iter)
            except StopIteration:
                self.val_iter = iter(self.val_loader)
                xv, yv = next(self.val_iter)
            self.opt_a.zero_grad(set_to_none=True)
            noise = self._noise(epoch, step, _examples(xv), phase=1)
            self._loss(xv.to(self.ctx.device), yv.to(self.ctx.device), noise)[0].backward()
            self.opt_a.step()
        self.opt_w.zero_grad(set_to_none=True)
        self.opt_a.zero_grad(set_to_none=True)
        loss, logits, penalty = self._loss(x, y, self._noise(epoch, step, _examples(x)))
        return loss, logits, dict(penalty=penalty.item())

    def update(self, loss: Tensor, epoch: int) -> None:
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.weight_parameters(), self.config.grad_clip)
        self.opt_w.step()
        if self.update_arch and not self.config.bilevel:  # single level: the same batch, the same backward
            self.opt_a.step()

    def end_epoch(self, epoch: int) -> Dict[str, object]:
        self.schedule.step()
        distributed.broadcast_buffers(self.model)  # every rank evaluates (and rank 0 saves) rank 0's BN statistics
        # the supernet's figures are those of one network sampled at tau (the same on every rank), its BatchNorm
        # recalibrated as the child's is: the network SNAS's claim compares the child with
        sampled = gumbel_noise(self.sampler.noise_shapes(self.model, 1), self.config.seed, epoch, 0, self.ctx,
                               "shared", phase=_EVAL_PHASE, device=self.ctx.device)
        val_loss, val_acc = self.evaluate(self.tau, sampled)
        child_acc = self.evaluate(None)[1]
        self.history.append({f"{name}_alpha": a.tolist() for name, a in zip(self.model.alpha_names,
                                                                             self.model.alphas())})
        self.arch = arch_convergence(self.model, self.initial_choice)
        return dict(val_loss=val_loss, val_acc=val_acc, child_val_acc=child_acc, **_flatten(self.arch))

    def evaluate(self, tau: Optional[float], noise=None) -> Tuple[float, float]:
        """(loss, accuracy) on search-validation of the supernet (the network sampled by ``noise`` at ``tau``) or
        of its derived child (``tau`` None), after BatchNorm is recalibrated on ``config.bn_recalibration``
        training batches of that same network (0: the running statistics of training as they are). The model's
        weights, BatchNorm buffers and momenta are restored after."""
        model, device = self.model, self.ctx.device

        def forward(x):
            return _forward(model, self.sampler, x, tau, noise)

        if self.config.bn_recalibration <= 0:
            return evaluate(forward, model, self.val_loader, device)
        saved = {k: v.clone() for k, v in model.state_dict().items()}
        momenta = {m: m.momentum for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
        drop_path = model.drop_path_prob
        try:
            model.drop_path_prob = 0.0
            recalibrate_bn(forward, model, self.train_loader, self.config.bn_recalibration, device)
            # each rank recalibrated on its own shard: every rank evaluates rank 0's statistics, one network
            distributed.broadcast_buffers(model)
            return evaluate(forward, model, self.val_loader, device)
        finally:
            model.load_state_dict(saved)
            model.drop_path_prob = drop_path
            for m, momentum in momenta.items():
                m.momentum = momentum

    def describe(self, row: dict) -> str:
        kinds = [self.arch[name] for name in self.model.alpha_names]
        return (f"train_acc {row['train_acc']:.3f} val_acc {row['val_acc']:.3f} child_val_acc "
                f"{row['child_val_acc']:.3f} tau {row['tau']:.3f} entropy "
                f"{'/'.join(format(k['entropy'], '.2f') for k in kinds)} decided "
                f"{'+'.join(str(k['decided']) for k in kinds)} changed {self.arch['changed_edges']}")

    def write_genotype(self, end: EpochEnd) -> None:
        """``genotype.json``: the current derivation, ``softmax(log_alpha)`` and the untrained supernet's
        architecture."""
        space = self.space
        end.run.write_json("genotype.json", dict(
            genotype=space.to_dict(space.derive(self.model)), **self.history[-1], epoch=end.row["epoch"],
            initial_genotype=space.to_dict(genotype_of_choice(self.initial_choice, space))))


def search(config: SearchConfig, data, resume: bool = False, progress: bool = True,
           callbacks: Sequence[Callback] = (), sampler: Optional[SnasSampler] = None) -> SearchResult:
    """Runs (or resumes) a search. ``data`` is ``(train_set, val_set, info)`` from :func:`load_search_data`.
    ``callbacks``: run after every epoch on the main process, e.g. :func:`snas_fast.viz.callbacks.search_plots`,
    which ``snas-fast search`` passes.

    In a process group (``torchrun``, :func:`snas_fast.engine.distributed.setup`) the search is data-parallel: each
    rank trains on its shard of every batch (``config.batch_size`` per rank), gradients of the weights and of
    ``log_alpha`` are averaged, the Gumbel sample follows ``config.gumbel_sample``, BatchNorm statistics are per
    process unless ``config.sync_bn``, and only rank 0 writes the run directory. ``sampler``: how the weights are
    drawn (default ``config.sampler()``; first-order DARTS passes softmax weights)."""
    config.validate()
    ctx = distributed.context(config.device)
    space = Snas().space_for(config, data[2])
    task = SnasSearch(config, data, ctx, space, sampler)
    rows = fit(task, resume, progress, [task.write_genotype, *callbacks])
    last = rows[-1] if rows else {}
    arch = arch_convergence(task.model, task.initial_choice)
    kinds = [arch[name] for name in task.model.alpha_names]
    warning = convergence.unmoved_warning(arch["changed_edges"], sum(k["decided"] for k in kinds),
                                          sum(k["edges"] for k in kinds))
    if warning is not None:
        warnings.warn(warning, SearchWarning, stacklevel=2)
    return SearchResult(space.derive(task.model), last.get("val_acc", math.nan), last.get("child_val_acc", math.nan),
                        task.history, task.model, arch, warning, space)


class Snas(Strategy):
    """SNAS as a :class:`~snas_fast.search.base.Strategy`: ``snas-fast search``, on any space with a one-shot
    supernet."""

    name = "snas"
    config_class = SearchConfig
    variants = TRICKS
    needs = ("data", "supernet")

    def run(self, config: SearchConfig, data, resume: bool = False, progress: bool = True,
            callbacks: Sequence[Callback] = ()) -> SearchResult:
        return search(config, data, resume, progress, callbacks)
