"""The ``darts1d`` space: DARTS cells with 1-D candidates on sequences (MNIST-1D), and MNIST-1D's reference networks.

- :mod:`.space`: :data:`DARTS1D_PRIMITIVES`, :class:`Darts1dSpace`;
- :mod:`.baselines`: ConvBase, MLP, GRU and logistic regression, the published references.
"""
from .baselines import BASELINES, reference
from .space import DARTS1D_PRIMITIVES, Darts1dSpace

__all__ = ["BASELINES", "DARTS1D_PRIMITIVES", "Darts1dSpace", "reference"]
