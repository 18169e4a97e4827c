"""The OpenMP wait policy (snas_fast/_openmp.py): set before torch loads libgomp, never over the user's own."""
from __future__ import annotations

import os
import subprocess
import sys

from snas_fast import _openmp


def test_policy_env_leaves_a_users_choice_alone():
    assert _openmp.policy_env({}) == {"GOMP_SPINCOUNT": _openmp.SPINCOUNT}
    assert _openmp.policy_env({"OMP_WAIT_POLICY": "ACTIVE"}) == {}
    assert _openmp.policy_env({"GOMP_SPINCOUNT": "5"}) == {}
    assert _openmp.policy_env({"SNAS_FAST_OPENMP": "off"}) == {}


def test_configure_is_too_late_once_torch_is_loaded():
    import torch  # noqa: F401  (the suite has loaded it already)

    assert _openmp.configure() is False


def _probe(extra, code):
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "SNAS_FAST_OPENMP")}
    env.update(extra)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_the_command_line_sets_the_policy_before_torch_loads():
    code = ("import sys, os; import snas_fast.cli; assert 'torch' in sys.modules; "
            "print(os.environ.get('GOMP_SPINCOUNT'))")
    assert _probe({}, code).stdout.strip() == _openmp.SPINCOUNT
    assert _probe({"OMP_WAIT_POLICY": "PASSIVE"}, code).stdout.strip() == "None"
