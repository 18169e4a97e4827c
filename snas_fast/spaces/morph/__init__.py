"""Auto-Keras's space (Jin, Song, Hu, KDD 2019): networks grown by function-preserving morphisms.

- :mod:`.spec`: the description (a DAG of layers, its JSON, the four morphisms on descriptions), pure data;
- :mod:`.net`: :class:`MorphNet`, the network of a description, and the morphisms applied with weights;
- :mod:`.distance`: the edit distance between two networks (:func:`edit_distance`).

The search (Bayesian optimisation over the edit-distance kernel, and its ablations) is a strategy:
:mod:`snas_fast.search.morph`.
"""
from .distance import edit_distance, layer_distance, skip_distance
from .net import MorphNet
from .spec import Layer, Morphism, MorphSpecError, Spec

__all__ = ["Layer", "MorphNet", "MorphSpecError", "Morphism", "Spec", "edit_distance", "layer_distance",
           "skip_distance"]
