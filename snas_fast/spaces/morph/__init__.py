"""Auto-Keras's space (Jin, Song, Hu, KDD 2019): networks grown by function-preserving morphisms.

- :mod:`.spec`: the description (a DAG of layers, its JSON, the four morphisms on descriptions), pure data;
- :mod:`.net`: :class:`MorphNet`, the network of a description, and the morphisms applied with weights;
- :mod:`.distance`: the edit distance between two networks (:func:`edit_distance`);
- :mod:`.space`: :class:`MorphSpace`, the :class:`~snas_fast.spaces.SearchSpace` protocol (``--space morph``).

The search (Bayesian optimisation over the edit-distance kernel, and its ablations) is a strategy:
:mod:`snas_fast.search.morph`.
"""
from .distance import edit_distance, layer_distance, skip_distance
from .net import MorphNet
from .space import MorphSettings, MorphSpace, input_form
from .spec import Layer, Morphism, MorphSpecError, Spec

__all__ = ["Layer", "MorphNet", "MorphSettings", "MorphSpace", "MorphSpecError", "Morphism", "Spec", "edit_distance",
           "input_form", "layer_distance", "skip_distance"]
