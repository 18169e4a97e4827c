"""Search strategies: the :class:`~snas_fast.search.base.Strategy` protocol, SNAS (:mod:`snas_fast.search.snas`:
its sampling policy and its search), the temperature schedules and the convergence figures. A strategy uses the
spaces and the engine; no space or engine module imports a strategy."""
from .._lazy import lazy_attributes

__getattr__, __dir__ = lazy_attributes(__name__, {"Strategy": ".base:Strategy", "Snas": ".snas:Snas",
                                                  "SnasSampler": ".snas:SnasSampler"})

