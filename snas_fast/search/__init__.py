"""Search strategies: the :class:`~snas_fast.search.base.Strategy` protocol and one module per strategy: SNAS
(:mod:`.snas`: its sampling policy and its search), SNAS with perturbation-based selection (:mod:`.snas_pt`), random
search (:mod:`.random`), weight-sharing random search
(:mod:`.rsws`), NASWOT (:mod:`.naswot`), MONAS (:mod:`.monas`), network morphism with Bayesian optimisation
(:mod:`.morph`, :mod:`.bayes`); :func:`get_strategy` by name; the temperature schedules and the convergence
figures. A strategy uses the spaces and the engine; no space or engine module imports a strategy."""
from .._lazy import lazy_attributes

__getattr__, __dir__ = lazy_attributes(__name__, {
    "Strategy": ".base:Strategy", "Snas": ".snas:Snas", "SnasSampler": ".snas:SnasSampler",
    "RandomSearch": ".random:RandomSearch", "Rsws": ".rsws:Rsws", "Naswot": ".naswot:Naswot",
    "SnasPt": ".snas_pt:SnasPt", "MorphSearch": ".morph:MorphSearch",
    "get_strategy": ".registry:get_strategy", "strategy_names": ".registry:strategy_names",
})

