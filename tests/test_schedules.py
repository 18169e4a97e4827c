"""Temperature schedules: SNAS's linear schedule at the epochs that matter, the exponential one, the checks."""
from __future__ import annotations

import math

import pytest

from snas_fast.search.schedules import exponential_tau, linear_tau


@pytest.mark.parametrize("epoch,tau", [(0, 1.0), (75, 0.515), (150, 0.03), (200, 0.03)])
def test_linear_tau_snas_defaults(epoch, tau):
    # (1 - epoch / 150) * (1 - 0.03) + 0.03; at 75: 0.5 * 0.97 + 0.03 = 0.515; tau_min from 150 on.
    assert linear_tau(epoch) == pytest.approx(tau, abs=1e-15)


def test_linear_tau_shape():
    taus = [linear_tau(e / 4) for e in range(0, 4 * 160)]
    assert all(a >= b for a, b in zip(taus, taus[1:]))  # never rises
    assert linear_tau(149.5) == pytest.approx(0.5 / 150 * 0.97 + 0.03)  # fractional epochs (per-step schedule)
    assert linear_tau(5, tau0=5.0, tau_min=1.0, length=10) == pytest.approx(3.0)
    assert linear_tau(3, tau0=0.5, tau_min=0.5) == 0.5


@pytest.mark.parametrize("epoch,tau", [(0, 1.0), (10, math.exp(-1.0)), (100, 0.03), (1000, 0.03)])
def test_exponential_tau(epoch, tau):
    assert exponential_tau(epoch, 1.0, 0.03, 0.1) == pytest.approx(tau, rel=1e-12)


def test_exponential_tau_rate_zero_keeps_tau0():
    assert exponential_tau(1000, 2.0, 0.1, 0.0) == 2.0


BAD = [
    ("negative epoch", lambda: linear_tau(-1), ValueError, r"epoch: expected a number >= 0, got -1.0"),
    ("epoch nan", lambda: linear_tau(float("nan")), ValueError, r"epoch: expected a finite number, got nan"),
    ("epoch str", lambda: linear_tau("3"), TypeError, r"epoch: expected a real number, got str"),
    ("epoch bool", lambda: linear_tau(True), TypeError, r"epoch: expected a real number, got bool"),
    ("tau0 zero", lambda: linear_tau(0, tau0=0.0), ValueError, r"tau0: expected a number > 0, got 0.0"),
    ("tau_min zero", lambda: linear_tau(0, tau_min=0.0), ValueError, r"tau_min: expected a number > 0, got 0.0"),
    ("tau_min above tau0", lambda: linear_tau(0, tau0=0.5, tau_min=1.0), ValueError,
     r"tau_min: expected at most tau0 = 0.5, got 1.0"),
    ("length zero", lambda: linear_tau(0, length=0), ValueError, r"length: expected a number > 0, got 0.0"),
    ("length inf", lambda: linear_tau(0, length=float("inf")), ValueError, r"length: expected a finite number"),
    ("negative rate", lambda: exponential_tau(0, 1.0, 0.1, -0.5), ValueError, r"rate: expected a number >= 0"),
    ("tau_min above tau0, exp", lambda: exponential_tau(0, 0.1, 1.0, 0.5), ValueError, r"tau_min: expected at most"),
]


@pytest.mark.parametrize("desc,call,exc,pattern", BAD, ids=[b[0] for b in BAD])
def test_bad_arguments_are_rejected_with_a_message(desc, call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


@pytest.mark.parametrize("schedule", ["linear", "exp"])
def test_search_temperature_goes_from_tau_start_to_tau_end_over_the_run(schedule):
    from snas_fast.search.snas import SearchConfig, temperature

    config = SearchConfig(epochs=10, tau_schedule=schedule, tau_start=2.0, tau_end=0.02)
    taus = [temperature(config, e) for e in range(13)]
    assert taus[0] == pytest.approx(2.0) and taus[10] == pytest.approx(0.02) and taus[12] == pytest.approx(0.02)
    assert all(a > b for a, b in zip(taus[:10], taus[1:11]))
    if schedule == "exp":  # a constant factor per epoch: (0.02 / 2) ** (1 / 10)
        assert [b / a for a, b in zip(taus[:10], taus[1:11])] == pytest.approx([0.01 ** 0.1] * 10)
    else:
        assert taus[5] == pytest.approx(1.01)


@pytest.mark.parametrize("settings,message", [
    (dict(tau_schedule="exponential"), "tau_schedule: expected one of linear, exp, got 'exponential'"),
    (dict(tau_start=0.0), "tau_start: expected a temperature > 0, got 0.0"),
    (dict(tau_start=0.5, tau_end=1.0), "tau_end: expected at most tau_start = 0.5, got 1.0"),
])
def test_search_temperature_settings_are_checked(settings, message):
    from snas_fast.search.snas import SearchConfig, SearchError

    with pytest.raises(SearchError, match=message):
        SearchConfig(**settings).validate()


def test_a_0_1_exponential_config_is_refused_with_the_new_flags_named():
    from snas_fast.search.snas import SearchConfig, SearchError

    with pytest.raises(SearchError, match="--tau-schedule exp"):
        SearchConfig.from_dict(dict(tau_schedule="exponential", tau_rate=0.95, tau0=1.0))
