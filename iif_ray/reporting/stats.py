"""Statistics the field trusts, through ``rliable`` (Agarwal et al. 2021).

Every interval here is a stratified bootstrap over runs computed by ``rliable``: the IQM
(interquartile mean) of normalised scores, the probability of improvement P(X > Y) and the
mean of paired per-seed metrics (SE_ave, SE_peak, RT_peak). Bootstraps use a fixed random state
so a report regenerates to the same digits.

Scores are normalised per environment by the preset's return range, ``(x - lo) / (hi - lo)``,
so environments can be aggregated.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

REPS = 5000
CI = 0.95
SEED = 0


@dataclass(frozen=True)
class Estimate:
    """A point estimate and its 95% bootstrap interval."""

    point: float
    lo: float
    hi: float

    def fmt(self, scale: float = 1.0, digits: int = 2) -> str:
        if math.isnan(self.point):
            return "-"
        if math.isnan(self.lo):
            return f"{self.point * scale:.{digits}f} (one run)"
        return (f"{self.point * scale:.{digits}f} "
                f"[{self.lo * scale:.{digits}f}, {self.hi * scale:.{digits}f}]")

    def side(self, null: float) -> int:
        """+1 when the whole interval is above ``null``, -1 below, 0 when it straddles."""
        if math.isnan(self.point):
            return 0
        return 1 if self.lo > null else -1 if self.hi < null else 0


NAN = Estimate(math.nan, math.nan, math.nan)


@contextmanager
def _seeded() -> Iterator[np.random.RandomState]:
    """A fixed random state for rliable, and numpy's global generator seeded too (some of
    rliable's resampling draws from it whatever the random_state), given back afterwards:
    reports regenerate to the same digits."""
    saved = np.random.get_state()
    np.random.seed(SEED)
    try:
        with warnings.catch_warnings():  # arch's notice about its future default generator
            warnings.simplefilter("ignore", FutureWarning)
            yield np.random.RandomState(SEED)
    finally:
        np.random.set_state(saved)


def _interval(score_dict: dict, func) -> dict[str, Estimate]:
    from rliable import library as rly

    with _seeded() as state:
        points, cis = rly.get_interval_estimates(score_dict, func, reps=REPS,
                                                 confidence_interval_size=CI,
                                                 random_state=state)
    return {k: Estimate(float(points[k][0]), float(cis[k][0][0]), float(cis[k][1][0]))
            for k in score_dict}


def iqm(scores: dict[str, np.ndarray]) -> dict[str, Estimate]:
    """IQM over all runs x tasks of each ``(runs, tasks)`` matrix, with its interval."""
    from rliable import metrics

    scores = {k: np.asarray(v, dtype=float) for k, v in scores.items() if len(v)}
    if not scores:
        return {}
    return _interval(scores, lambda x: np.array([metrics.aggregate_iqm(x)]))


def mean(values: Iterable[float | None]) -> Estimate:
    """Mean of per-run values (e.g. paired per-seed metrics), bootstrapped over runs; missing
    values (None, NaN) are left out, so a seed that lacks a metric does not drag the mean."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if len(v) < 2:
        return Estimate(float(v[0]), math.nan, math.nan) if len(v) else NAN
    return _interval({"x": v[:, None]}, lambda x: np.array([np.mean(x)]))["x"]


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> Estimate:
    """P(X > Y) (ties count half) of two ``(runs, tasks)`` matrices, averaged over tasks."""
    from rliable import metrics

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 2 or len(y) < 2:
        return NAN
    return _interval({"p": (x, y)},
                     lambda a, b: np.array([metrics.probability_of_improvement(a, b)]))["p"]


def performance_profiles(scores: dict[str, np.ndarray], taus: np.ndarray
                         ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Fraction of runs with normalised score > tau, with bootstrap bands (rliable)."""
    from rliable import library as rly

    with _seeded():
        return rly.create_performance_profile(scores, taus, reps=REPS // 5)


def normalise(values: np.ndarray, return_range: tuple[float, float] | None) -> np.ndarray:
    """``(x - lo) / (hi - lo)``; unchanged when the environment has no range."""
    if not return_range:
        return np.asarray(values, dtype=float)
    lo, hi = return_range
    return (np.asarray(values, dtype=float) - lo) / (hi - lo)
