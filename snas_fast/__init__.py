"""snas_fast: fused kernels for Stochastic Neural Architecture Search (SNAS) in PyTorch.

Public API: :func:`mixed_op`, :func:`gumbel_mixed_op`, :class:`FusedMixedOp`, :mod:`snas_fast.reference`
(the eager oracle and baseline), :func:`use_backend` and :func:`available_backends`; the search:
:class:`Supernet`, :class:`Genotype` and :mod:`snas_fast.genotypes`, :mod:`snas_fast.costs`,
:mod:`snas_fast.schedules`, :mod:`snas_fast.trainer` and the ``snas-fast`` command line; evaluation:
:class:`NetworkCIFAR`, :class:`NetworkImageNet` (:mod:`snas_fast.networks`), :mod:`snas_fast.retrain`;
many processes: :mod:`snas_fast.distributed`.
"""
from . import reference
from ._backend import available_backends, use_backend
from . import _ops  # noqa: F401  (registers fake kernels and autograd)
from .functional import gumbel_mixed_op, mixed_edge, mixed_op
from .modules import FusedMixedOp, Zero, is_zero_op
from . import costs, genotypes, schedules, search_space  # noqa: E402  (pure policy modules)
from .genotypes import Genotype
from .networks import NetworkCIFAR, NetworkImageNet
from .supernet import Supernet

__version__ = "0.1.0"

__all__ = [
    "FusedMixedOp",
    "Genotype",
    "NetworkCIFAR",
    "NetworkImageNet",
    "Supernet",
    "costs",
    "genotypes",
    "schedules",
    "search_space",
    "Zero",
    "available_backends",
    "gumbel_mixed_op",
    "is_zero_op",
    "mixed_edge",
    "mixed_op",
    "reference",
    "use_backend",
]
