"""Search spaces: :class:`Primitive` records, the :class:`SearchSpace` protocol, a registry of spaces by name;
:mod:`snas_fast.spaces.darts`, the DARTS CNN space; :mod:`snas_fast.spaces.gnn`, EGNAS's graph space;
:mod:`snas_fast.spaces.morph`, Auto-Keras's morphable networks. A space knows no search strategy."""
from .base import FOLDS, Cost, Primitive, SearchBN, SearchSpace, count_module, get_space, register_space, space_names

__all__ = ["Cost", "FOLDS", "Primitive", "SearchBN", "SearchSpace", "count_module", "get_space", "register_space",
           "space_names"]
