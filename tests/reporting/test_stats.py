"""The statistics handed to rliable are rliable's own, and an interval's Monte-Carlo error is
what the report's header states."""

from __future__ import annotations

import numpy as np
import pytest
from rliable import metrics as rly_metrics

from iif_ray.reporting import stats as st


def _samples(rng: np.random.Generator, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Score matrices of every kind a report meets: few runs, ties, identical arms, NaN."""
    out = []
    for i in range(n):
        shape_x = (int(rng.integers(1, 12)), int(rng.integers(1, 5)))
        shape_y = (int(rng.integers(1, 12)), shape_x[1])
        digits = int(rng.integers(1, 4))  # rounding makes ties
        x = np.round(rng.random(shape_x), digits)
        y = x.copy() if i % 7 == 0 else np.round(rng.random(shape_y), digits)
        if i % 11 == 0:
            x[0, 0] = np.nan
        out.append((x, y))
    return out


def _same(a: float, b: float) -> bool:
    return a == b or (np.isnan(a) and np.isnan(b))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # scipy on the NaN samples
def test_the_statistics_are_rliables_to_the_last_bit():
    for x, y in _samples(np.random.default_rng(0), 400):
        assert _same(st.iqm_statistic(x)[0], rly_metrics.aggregate_iqm(x)), x
        assert _same(st.improvement_statistic(x, y)[0],
                     rly_metrics.probability_of_improvement(x, y)), (x, y)


def test_an_interval_asked_twice_in_one_report_is_computed_once(monkeypatch):
    calls = []
    monkeypatch.setattr(st, "REPS", 200)
    monkeypatch.setattr(st, "_seeded", _counting(st._seeded, calls))
    values = np.linspace(0.0, 1.0, 8)
    with st.memoised():
        first, again = st.mean(values), st.mean(values.copy())
        st.mean(values + 1.0)
    assert first == again and len(calls) == 2
    st.mean(values)  # outside a report nothing is kept
    assert len(calls) == 3


def _counting(seeded, calls):
    def wrapped():
        calls.append(1)
        return seeded()
    return wrapped


@pytest.mark.filterwarnings("ignore::FutureWarning")  # arch
def test_an_interval_ends_monte_carlo_error_is_within_the_stated_one(monkeypatch):
    """Ten runs' mean, its interval recomputed under twelve bootstrap seeds: an end moves by
    less than the header's 95th percentile of the measured errors, at the report's REPS."""
    values = np.random.default_rng(1).normal(size=10)
    ends = []
    for seed in range(12):
        monkeypatch.setattr(st, "SEED", seed)
        est = st.mean(values)
        ends.append((est.lo, est.hi))
    ends = np.array(ends)
    width = np.mean(ends[:, 1] - ends[:, 0])
    error = np.std(ends, axis=0, ddof=1) / width
    assert error.max() < st.MC_END_ERROR[1], error
