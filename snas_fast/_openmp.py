"""OpenMP's wait policy, set before torch loads libgomp.

torch's OpenMP threads (and the extension's: both use libgomp) spin while they wait for work. When other processes
keep every core busy, a spinning thread holds the core that the thread it waits for needs: measured on a 2-core
machine with two other torch processes, one search step took over 25 s instead of 2.8 s (bench/RESULTS.md, "the
OpenMP wait policy"). A bounded spin keeps the idle speed and avoids the collapse, so the command line, the tests
and the benchmarks set ``GOMP_SPINCOUNT`` before torch is imported. libgomp reads it once, when it is loaded: a
program that imported torch first keeps what it had.

The user's own setting wins: nothing is changed when ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` is set, or when
``SNAS_FAST_OPENMP=off``.
"""
from __future__ import annotations

import os
import sys

#: GOMP_SPINCOUNT set by :func:`configure` (libgomp's default spins far longer; PASSIVE is 0). Measured
#: (bench/bench_openmp.py, bench/RESULTS.md): 5 % slower than the default on an idle 2-core machine, and a step
#: finishes in 21 s instead of over 25 s with two other torch processes busy.
SPINCOUNT = "10000"


def policy_env(environ) -> dict:
    """What to add to the environment ``environ`` (a mapping): ``{"GOMP_SPINCOUNT": SPINCOUNT}``, or nothing when
    its owner chose a policy (``OMP_WAIT_POLICY``, ``GOMP_SPINCOUNT``) or ``SNAS_FAST_OPENMP=off``."""
    if environ.get("SNAS_FAST_OPENMP", "").lower() == "off":
        return {}
    if "OMP_WAIT_POLICY" in environ or "GOMP_SPINCOUNT" in environ:
        return {}
    return {"GOMP_SPINCOUNT": SPINCOUNT}


def configure() -> bool:
    """Adds :func:`policy_env` to ``os.environ`` if torch is not loaded yet (this process's libgomp and every
    child's then read it). Returns whether anything was set."""
    if "torch" in sys.modules:
        return False  # too late for this process: libgomp has read its settings
    extra = policy_env(os.environ)
    os.environ.update(extra)
    return bool(extra)
