"""snas_fast: fused kernels for Stochastic Neural Architecture Search (SNAS) in PyTorch, and one engine for search
strategies on top of them.

The layers (docs/architecture.md), each a subpackage:

- :mod:`snas_fast.ops`: the fused ops (:func:`mixed_op`, :func:`gumbel_mixed_op`, :func:`mixed_edge`,
  :class:`FusedMixedOp`), their backends and the eager reference. Knows no search space.
- :mod:`snas_fast.data`: the datasets by name and kind (images, graphs) and their loaders. Knows no space.
- :mod:`snas_fast.spaces`: search spaces behind one protocol (:class:`snas_fast.spaces.SearchSpace`): the DARTS space
  with :class:`Supernet`, :class:`NetworkCIFAR`, :class:`NetworkImageNet`, genotypes and costs; EGNAS's graph
  space; Auto-Keras's morphable networks.
- :mod:`snas_fast.search`: search strategies, each written once against the protocol (SNAS, DARTS, SNAS-PT, random,
  rsws, NASWOT, MONAS, evolution, BO, the morphism searches), the evaluators, schedules and convergence figures.
- :mod:`snas_fast.engine`: the one training loop, run directories, settings, many processes, retraining.
- :mod:`snas_fast.viz`: plots, as callbacks of the loop.

Every name below is imported on first use, so importing a pure-policy module (say the DARTS genotypes) does not
load the compiled extension.
"""
from . import _compat
from ._lazy import lazy_attributes

__version__ = "0.1.0"

_PUBLIC = {
    "FusedMixedOp": ".ops:FusedMixedOp",
    "Zero": ".ops:Zero",
    "is_zero_op": ".ops:is_zero_op",
    "mixed_op": ".ops:mixed_op",
    "gumbel_mixed_op": ".ops:gumbel_mixed_op",
    "mixed_edge": ".ops:mixed_edge",
    "fuse_mixed_ops": ".ops:fuse_mixed_ops",
    "unfuse_mixed_ops": ".ops:unfuse_mixed_ops",
    "fuse_summary": ".ops:fuse_summary",
    "available_backends": ".ops:available_backends",
    "use_backend": ".ops:use_backend",
    "reference": ".ops.reference",
    "Genotype": ".spaces.darts.genotypes:Genotype",
    "Supernet": ".search.snas:SnasSupernet",
    "NetworkCIFAR": ".spaces.darts.networks:NetworkCIFAR",
    "NetworkImageNet": ".spaces.darts.networks:NetworkImageNet",
    "genotypes": ".spaces.darts.genotypes",
    "costs": ".spaces.darts.costs",
    "schedules": ".search.schedules",
    "search_space": ".spaces.darts.space",
}
#: the layers, as attributes (``snas_fast.spaces.darts``) without an import of their own
_LAYERS = {name: f".{name}" for name in ("ops", "data", "spaces", "search", "engine", "viz", "cli")}
#: the old flat modules, as attributes too (``snas_fast.trainer.RECIPES``): the deprecated alias of each
_OLD = {old.rpartition(".")[2]: old for old in _compat.MOVED
        if old.count(".") == 1 and old.rpartition(".")[2] not in _PUBLIC}

__all__ = sorted(_PUBLIC)

_compat.install()
__getattr__, __dir__ = lazy_attributes(__name__, {**_PUBLIC, **_LAYERS, **_OLD})
