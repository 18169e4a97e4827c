"""Search strategies: the :class:`~snas_fast.search.base.Strategy` protocol (and :class:`~.base.CandidateSearch`,
the run skeleton of the strategies that ask an evaluator, :mod:`.evaluators`) and one module per strategy, each
written once against the :class:`~snas_fast.spaces.SearchSpace` protocol: SNAS (:mod:`.snas`: its sampling policy
and its search), first-order DARTS (:mod:`.darts`), SNAS with perturbation-based selection (:mod:`.snas_pt`),
random search (:mod:`.random`), weight-sharing random search (:mod:`.rsws`), NASWOT (:mod:`.naswot`), MONAS
(:mod:`.monas`), regularized evolution (:mod:`.evolution`), Bayesian optimisation (:mod:`.bo`, :mod:`.bayes`); the
morphism space's own growth strategies (:mod:`.morph`); :func:`get_strategy` by name; the temperature schedules and
the convergence figures. A strategy uses the spaces and the engine; no space or engine module imports a
strategy."""
from .._lazy import lazy_attributes

__getattr__, __dir__ = lazy_attributes(__name__, {
    "Strategy": ".base:Strategy", "Snas": ".snas:Snas", "SnasSampler": ".snas:SnasSampler",
    "RandomSearch": ".random:RandomSearch", "Rsws": ".rsws:Rsws", "Naswot": ".naswot:Naswot",
    "SnasPt": ".snas_pt:SnasPt", "MorphSearch": ".morph:MorphSearch", "Darts": ".darts:Darts",
    "Evolution": ".evolution:Evolution", "BayesianOptimisation": ".bo:BayesianOptimisation",
    "CandidateSearch": ".base:CandidateSearch",
    "get_strategy": ".registry:get_strategy", "strategy_names": ".registry:strategy_names",
    "register_strategy": ".registry:register_strategy",
})

