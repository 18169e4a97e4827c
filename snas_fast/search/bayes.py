"""Bayesian optimisation over network morphisms (Auto-Keras, ``bayesian.py``): the edit-distance kernel through a
Bourgain embedding, a Gaussian process, UCB, and the tree-structured acquisition search (A* with simulated
annealing). Pure policy on descriptions (:class:`~snas_fast.spaces.morph.Spec`): no training, no weights.

The kernel. ``d`` is :func:`snas_fast.spaces.morph.edit_distance`, which is not a Euclidean metric, so
``exp(-d^2)`` need not be positive semi-definite. Auto-Keras embeds the networks first (Bourgain): anchor sets
``S_ij`` (``j < t = ceil(ln n)`` draws of ``2^i`` of the n observed networks, ``i <= ceil(log2 n - 1)``), a network's
coordinate ``ij`` being ``min over s in S_ij of d(x, s)``; then ``k(a, b) = exp(-ρ(a, b)^2)`` with ``ρ`` the
Euclidean distance of the embeddings over the square root of their dimension (scikit-learn's ``rbf_kernel`` at its
default ``gamma = 1 / dim``, which is what Auto-Keras calls). That kernel is positive semi-definite. Auto-Keras's
``fit`` used it, but its ``predict`` used ``exp(-d^2)`` on raw edit distances: a different kernel between the
candidates and the observations than among the observations. Here one embedding (anchors drawn from the
observations) serves both.

The GP: targets standardised (mean 0, standard deviation 1; a constant prior mean), Cholesky of ``K + jitter I``
(``1e-10``, Auto-Keras's, raised tenfold up to ``1e-4`` while the factorisation fails: embeddings of two different
networks can coincide). Acquisition: ``UCB = mean + β std``, β = 2.576 (Auto-Keras's code; the paper says 2.5).

The acquisition search (:func:`acquisition_search`): a priority queue holds the observed networks at their
observed metric; pop the best; accept it with probability ``exp(min((value - best acquisition) / T, 1))``; if
accepted, draw its neighbours (one random morphism each), score the new ones by UCB, push them with the father they
descend from; ``T`` starts at 1 and is multiplied by 0.9 until below 1e-4 (88 rounds at most). The result is the
best-scoring description, its observed father and the chain of morphisms from it.

One change, measured: Auto-Keras expands any popped network, so chains of morphisms grow without bound, and with
this kernel (``exp(-ρ^2)``: two morphisms away from every observation the correlation is already about e^-4) the
highest UCB lies where the GP knows nothing: the search proposed networks 15 to 38 morphisms from anything trained
and did no better than random proposals on a synthetic objective. ``max_chain`` (default 1) expands only networks
fewer than that many morphisms from a trained one; ``None`` is Auto-Keras's search. The table (6 seeds, 30
evaluations, ``-d(x, target)``) is in bench/RESULTS.md and ``tests/test_morph.py`` checks the ordering.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from scipy.linalg import solve_triangular

from ..spaces.morph.distance import distances
from ..spaces.morph.spec import Morphism, Spec

__all__ = ["BETA", "BourgainEmbedding", "GaussianProcess", "Observation", "Proposal", "T0", "T_LOW", "RATE",
           "acquisition_search", "kernel", "ucb"]

BETA = 2.576
T0, RATE, T_LOW = 1.0, 0.9, 1e-4
JITTER, MAX_JITTER = 1e-10, 1e-4


class BourgainEmbedding:
    """Coordinates of networks from their edit distances to anchor sets drawn among ``points`` (descriptors or
    specs) by numpy's generator of ``seed`` (the same points give the same embedding). ``distance(x, ys) ->
    [len(ys)]``."""

    def __init__(self, points: Sequence, seed: int = 123, distance: Callable = distances):
        if len(points) == 0:
            raise ValueError("points: expected at least one observed network, got none")
        self.points, self.distance = list(points), distance
        n = len(points)
        rng = np.random.default_rng(seed)
        levels = max(math.ceil(math.log2(n) - 1), 0) if n > 1 else 0
        repeats = max(math.ceil(math.log(n)), 1)
        self.anchors: List[np.ndarray] = [rng.choice(n, 2 ** i, replace=True) for i in range(levels + 1)
                                          for _ in range(repeats)]

    @property
    def dim(self) -> int:
        return len(self.anchors)

    def embed(self, xs: Sequence) -> np.ndarray:
        """``[len(xs), dim]`` coordinates."""
        used = sorted({int(i) for a in self.anchors for i in a})
        where = np.full(len(self.points), -1)
        where[used] = np.arange(len(used))
        out = np.empty((len(xs), self.dim))
        for r, x in enumerate(xs):
            d = self.distance(x, [self.points[i] for i in used])
            out[r] = [d[where[a]].min() for a in self.anchors]
        return out


def kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``exp(-ρ^2)``, ``ρ^2 = ||a_i - b_j||^2 / dim``, of embeddings ``a [n, dim]`` and ``b [m, dim]``: ``[n, m]``."""
    sq = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    return np.exp(-sq / a.shape[1])


class GaussianProcess:
    """A GP regressor on a precomputed kernel. ``fit(K [n, n], y [n])``, then ``predict(Ks [m, n], kss [m])`` gives
    the posterior mean and standard deviation ``[m]`` in ``y``'s units. ``normalize``: standardise ``y`` (a
    constant prior mean and the data's scale), else a zero-mean prior on ``y`` as given."""

    def __init__(self, normalize: bool = True):
        self.normalize = normalize

    def fit(self, K: np.ndarray, y: Sequence[float]) -> "GaussianProcess":
        K, y = np.asarray(K, float), np.asarray(y, float)
        if K.ndim != 2 or K.shape[0] != K.shape[1] or K.shape[0] != y.shape[0] or y.ndim != 1:
            raise ValueError(f"K, y: expected [n, n] and [n], got {list(K.shape)} and {list(y.shape)}")
        self.mean_, self.scale_ = (float(y.mean()), float(y.std()) or 1.0) if self.normalize else (0.0, 1.0)
        z = (y - self.mean_) / self.scale_
        jitter = JITTER
        while True:
            try:
                self.L_ = np.linalg.cholesky(K + jitter * np.eye(len(y)))
                break
            except np.linalg.LinAlgError:
                if jitter >= MAX_JITTER:
                    raise
                jitter *= 10
        self.jitter_ = jitter
        self.alpha_ = solve_triangular(self.L_.T, solve_triangular(self.L_, z, lower=True), lower=False)
        return self

    def predict(self, Ks: np.ndarray, kss: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        Ks = np.atleast_2d(np.asarray(Ks, float))
        mean = Ks @ self.alpha_
        v = solve_triangular(self.L_, Ks.T, lower=True)
        var = np.maximum(np.asarray(kss, float) - (v * v).sum(0), 0.0)
        return mean * self.scale_ + self.mean_, np.sqrt(var) * self.scale_


def ucb(mean: np.ndarray, std: np.ndarray, beta: float = BETA) -> np.ndarray:
    return mean + beta * std


@dataclass(frozen=True)
class Observation:
    """A trained network: its id, description and metric (higher is better)."""

    id: int
    spec: Spec
    metric: float


@dataclass(frozen=True)
class Proposal:
    """What to train next: the observed ``father`` whose weights it inherits, the ``morphisms`` from it, the
    resulting ``spec`` and its acquisition value (NaN where none was computed)."""

    father: int
    morphisms: Tuple[Morphism, ...]
    spec: Spec
    acquisition: float = math.nan


class Surrogate:
    """The GP on the observations through the embedding: ``acquire(specs) -> UCB [m]``."""

    def __init__(self, observations: Sequence[Observation], beta: float = BETA, seed: int = 123):
        self.embedding = BourgainEmbedding([o.spec for o in observations], seed)
        self.train = self.embedding.embed([o.spec for o in observations])
        self.gp = GaussianProcess().fit(kernel(self.train, self.train), [o.metric for o in observations])
        self.beta = beta

    def acquire(self, specs: Sequence[Spec]) -> np.ndarray:
        e = self.embedding.embed(specs)
        mean, std = self.gp.predict(kernel(e, self.train), np.ones(len(specs)))
        return ucb(mean, std, self.beta)


def acquisition_search(observations: Sequence[Observation], generator: torch.Generator, neighbours: int = 8,
                       beta: float = BETA, t0: float = T0, rate: float = RATE, t_low: float = T_LOW,
                       admissible: Callable[[Spec], bool] = lambda spec: True, max_width: int = 1024,
                       seen: Sequence = (), max_chain: Optional[int] = 1) -> Optional[Proposal]:
    """The tree-structured search for the description of highest UCB (module docstring); None when every
    neighbour drawn was already observed (``seen``: more descriptors to avoid) or not ``admissible``."""
    surrogate = Surrogate(observations, beta)
    known = {o.spec.descriptor() for o in observations} | set(seen)
    heap: List[Tuple[float, int, int, Tuple[Morphism, ...], Spec]] = []
    for n, o in enumerate(sorted(observations, key=lambda o: -o.metric)):
        heapq.heappush(heap, (-o.metric, n, o.id, (), o.spec))
    counter = len(heap)
    best: Optional[Proposal] = None
    t = t0
    while heap and t > t_low:
        value, _, father, chain, spec = heapq.heappop(heap)
        value = -value
        opt = best.acquisition if best is not None else -math.inf
        accept = math.exp(min((value - opt) / t, 1.0)) >= float(torch.rand((), generator=generator))
        if accept and (max_chain is None or len(chain) < max_chain):
            children = []
            for _ in range(neighbours):
                m = spec.draw(generator, max_width)
                child = spec.apply(m)
                d = child.descriptor()
                if d in known or not admissible(child):
                    continue
                known.add(d)
                children.append((chain + (m,), child))
            if children:
                scores = surrogate.acquire([c for _, c in children])
                for (c_chain, child), score in zip(children, scores):
                    heapq.heappush(heap, (-float(score), counter, father, c_chain, child))
                    counter += 1
                    if best is None or score > best.acquisition:
                        best = Proposal(father, c_chain, child, float(score))
        t *= rate
    return best


# ------------------------------------------------------------------------------------------------------------
# Any space: a GP on feature vectors (the space's encoding, or a Bourgain embedding of its distance)
# ------------------------------------------------------------------------------------------------------------
def l1_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[n, m]`` L1 distances of the rows of ``a [n, D]`` and ``b [m, D]`` (scipy's ``cdist``)."""
    from scipy.spatial.distance import cdist

    return cdist(np.asarray(a, float), np.asarray(b, float), "cityblock")


#: The lengthscales (multiples of the median pairwise distance) and noise variances (of the standardised metric)
#: :class:`FeatureSurrogate` chooses from by the marginal likelihood.
LENGTHSCALES = (0.25, 0.5, 1.0, 2.0, 4.0)
NOISES = (1e-4, 1e-2, 1e-1)


class FeatureSurrogate:
    """GP-UCB on feature vectors: ``k(a, b) = exp(-||a - b||_1 / l)`` (a Laplace kernel: positive semi-definite for
    any real vectors, and on one-hot encodings a function of the number of decisions two architectures differ in),
    a noise variance on the diagonal (short trainings are noisy), ``l`` and the noise chosen on a grid
    (:data:`LENGTHSCALES` x :data:`NOISES`) by the log marginal likelihood of the standardised metrics
    (:meth:`choose`), or given (``hyper = (lengthscale, noise)``). ``acquire(features [m, D]) -> UCB [m]``."""

    def __init__(self, features: np.ndarray, metrics: Sequence[float], beta: float = BETA,
                 hyper: Optional[Tuple[float, float]] = None):
        self.x = np.asarray(features, float)
        y = np.asarray(metrics, float)
        D = l1_distances(self.x, self.x)
        if hyper is None:
            hyper = self.choose(D, y)
        self.lengthscale, self.noise = hyper
        self.gp = GaussianProcess().fit(np.exp(-D / self.lengthscale) + self.noise * np.eye(len(y)), y)
        self.beta = beta

    @staticmethod
    def choose(D: np.ndarray, y: np.ndarray) -> Tuple[float, float]:
        """``(lengthscale, noise)`` of highest log marginal likelihood on the grid, for pairwise L1 distances
        ``D [n, n]`` and metrics ``y [n]`` (lengthscales in units of the median positive distance)."""
        positive = D[D > 0]
        scale = float(np.median(positive)) if positive.size else 1.0
        best = None
        for ls in LENGTHSCALES:
            for noise in NOISES:
                gp = GaussianProcess().fit(np.exp(-D / (ls * scale)) + noise * np.eye(len(y)), y)
                z = (y - gp.mean_) / gp.scale_
                lml = -0.5 * z @ gp.alpha_ - np.log(np.diag(gp.L_)).sum() - 0.5 * len(y) * math.log(2 * math.pi)
                if best is None or lml > best[0]:
                    best = (lml, (ls * scale, noise))
        return best[1]

    def acquire(self, features: np.ndarray) -> np.ndarray:
        Ks = np.exp(-l1_distances(np.asarray(features, float), self.x) / self.lengthscale)
        mean, std = self.gp.predict(Ks, np.ones(len(Ks)))
        return ucb(mean, std, self.beta)
