"""Search spaces: :class:`Primitive` records, the :class:`SearchSpace` protocol (the only thing a strategy sees of a
space), the :class:`OneShot` supernet protocol, a registry of spaces by name; :mod:`snas_fast.spaces.darts`, the DARTS
CNN space; :mod:`snas_fast.spaces.gnn`, EGNAS's graph space; :mod:`snas_fast.spaces.morph`, Auto-Keras's morphable
networks. A space knows no search strategy and no engine."""
from .base import (CAPABILITIES, FOLDS, BaselineSettings, Cost, Decision, LayoutSettings, MixedSettings, OneShot,
                   Primitive, SearchBN, SearchSpace, SizeSettings, Unsupported, count_module, get_space,
                   register_space, space_names, space_of_dict)

__all__ = ["BaselineSettings", "CAPABILITIES", "Cost", "Decision", "FOLDS", "LayoutSettings", "MixedSettings",
           "OneShot", "Primitive", "SearchBN", "SearchSpace", "SizeSettings", "Unsupported", "count_module",
           "get_space", "register_space", "space_names", "space_of_dict"]
