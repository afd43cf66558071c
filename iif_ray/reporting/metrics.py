"""The paper's sample-efficiency metrics of one run against a reference run, per seed.

Definitions (paper §5.2, DESIGN §6), per environment and seed, comparing a method A with PPO:

* curves: evaluation return per round, smoothed by a trailing mean over ``SMOOTH`` rounds
  (evaluation uses few episodes per round on a 2-core machine, the paper used 1000);
* levels: ``LEVELS`` evenly spaced returns from PPO's first-round value up to PPO's peak
  (all reached by PPO by construction);
* ``m_A(v)``: first round whose smoothed return is >= v. A level A never reaches counts as
  round ``R + 1`` (R = rounds run), which understates A's cost, and is reported;
* ``reduction(v) = 1 - m_A(v) / m_PPO(v)``; ``SE_ave`` is its mean over the levels,
  ``SE_peak`` its value at PPO's peak;
* ``RT_peak = 1 - T_A(m_A(peak)) / T_PPO(R)``, with ``T`` the cumulative training wall-clock
  (sampling + scoring + update, evaluation excluded). This is the paper's arithmetic (Table 5:
  time for IIF to match PPO's peak over PPO's time for all rounds).

Evaluated runs (``evals.csv``) read the same metrics off exact or paired evaluations
(:func:`paired_efficiency`): a level counts as reached within ``REACH_TOL`` of the return range,
and "final" is the mean over the last ``FINAL_FRACTION`` of the rounds.

Seeds are paired by index; intervals are rliable's 95% bootstrap of the mean over seeds
(:func:`iif_ray.reporting.stats.mean`, which leaves out a seed's missing value), as everywhere
else in the report. Every section computes its figures through this module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from iif_ray.presets import PRESETS

SMOOTH = 3
LEVELS = 10
FINAL_FRACTION = 0.1  # "final": evaluation points in the last 10% of a run's rounds
REACH_TOL = 0.01  # a level counts as reached within 1% of the return range


def smoothed(curve: pd.Series) -> np.ndarray:
    """Trailing mean over ``SMOOTH`` rounds: few evaluation episodes per round are noisy."""
    return curve.rolling(SMOOTH, min_periods=1).mean().to_numpy()


def first_round(curve: np.ndarray, level: float) -> int:
    """1-based first round with ``curve >= level``; ``len(curve) + 1`` if never."""
    hits = np.flatnonzero(curve >= level)
    return int(hits[0]) + 1 if len(hits) else len(curve) + 1


@dataclass
class Efficiency:
    """One seed's SE_ave, SE_peak, RT_peak, and whether the method reached the peak at all."""

    se_ave: float
    se_peak: float
    rt_peak: float
    reached_peak: bool


def efficiency(ppo: pd.DataFrame, other: pd.DataFrame) -> Efficiency:
    """Metrics of one seed's run of a method against the same seed's PPO run.

    Only rounds with an evaluation count (an LM run evaluates every few rounds): curves are
    smoothed over evaluations, and a level is reached in the round of the first evaluation
    at or above it.
    """
    ev_ppo = ppo.dropna(subset=["eval_return"])
    ev_oth = other.dropna(subset=["eval_return"])
    if ev_ppo.empty or ev_oth.empty:
        return Efficiency(math.nan, math.nan, math.nan, False)
    c_ppo, c_oth = smoothed(ev_ppo["eval_return"]), smoothed(ev_oth["eval_return"])
    rounds_ppo, rounds_oth = ev_ppo["round"].to_numpy(), ev_oth["round"].to_numpy()
    never = int(other["round"].max()) + 1

    def reach(curve: np.ndarray, rounds: np.ndarray, level: float) -> int:
        i = first_round(curve, level) - 1
        return int(rounds[i]) if i < len(rounds) else never

    start, peak = c_ppo[0], c_ppo.max()
    if peak <= start:  # PPO never improved: no levels to measure
        return Efficiency(math.nan, math.nan, math.nan, False)
    levels = start + (peak - start) * np.arange(1, LEVELS + 1) / LEVELS
    reductions = [1 - reach(c_oth, rounds_oth, v) / reach(c_ppo, rounds_ppo, v)
                  for v in levels]
    m_oth_peak = reach(c_oth, rounds_oth, peak)
    clock = other.set_index("round")["train_s"].cumsum()
    reached = m_oth_peak < never
    t_reach = float(clock.loc[m_oth_peak]) if reached else float(clock.iloc[-1])
    return Efficiency(float(np.mean(reductions)), float(reductions[-1]),
                      1 - t_reach / float(ppo["train_s"].sum()), reached)



def reach_tolerance(env: str) -> float:
    """How close to a level counts as reaching it: REACH_TOL of the preset's return range."""
    rr = PRESETS[env].return_range if env in PRESETS else None
    return REACH_TOL * (rr[1] - rr[0]) if rr else 0.0


def _trained(run: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """A run's rounds >= 1 and their returns, in round order, as arrays: levels are looked
    up a few thousand times per report, and a DataFrame filter per look-up is the slow part."""
    rounds = run["round"].to_numpy()
    trained = rounds >= 1
    return rounds[trained], run["eval_return"].to_numpy()[trained]


def _first_reach(run: tuple[np.ndarray, np.ndarray], level: float, tol: float) -> int | None:
    """The first round (>= 1) whose return is at least ``level - tol``; None if none is."""
    rounds, returns = run
    hit = np.flatnonzero(returns >= level - tol)
    return int(rounds[hit[0]]) if len(hit) else None


def paired_efficiency(ppo: pd.DataFrame, other: pd.DataFrame, tol: float) -> Efficiency:
    """The paper's SE_ave, SE_peak and RT_peak of one seed's run against PPO's same seed.

    Levels run from PPO's initial value to its peak; a level counts as reached within
    ``tol``; a level never reached counts as round R + 1.
    """
    start = float(ppo["eval_return"].iloc[0])
    peak = float(ppo.loc[ppo["round"] >= 1, "eval_return"].max())
    if peak - start <= tol:
        return Efficiency(math.nan, math.nan, math.nan, False)
    budget = int(other["round"].max())
    levels = start + (peak - start) * np.arange(1, LEVELS + 1) / LEVELS
    ppo_run, other_run = _trained(ppo), _trained(other)
    reductions = []
    for v in levels:
        m_ppo = _first_reach(ppo_run, v, tol)
        m_oth = _first_reach(other_run, v, tol)
        reductions.append(1 - (m_oth if m_oth is not None else budget + 1) / m_ppo)
    m_peak = _first_reach(other_run, peak, tol)
    t_reach = (float(other.loc[other["round"] == m_peak, "clock_s"].iloc[0])
               if m_peak is not None else float(other["clock_s"].max()))
    return Efficiency(float(np.mean(reductions)), float(reductions[-1]),
                      1 - t_reach / float(ppo["clock_s"].max()), m_peak is not None)


def run_scores(run: pd.DataFrame, column: str = "eval_return",
               rounds: int | None = None) -> tuple[float, float]:
    """(final, auc) of one run's ``column``: its mean over the rounds in the last 10% of the
    run, and over all rounds >= 1. ``rounds``: the run's length (default: its last round);
    rounds without a value (NaN: not evaluated) are left out of both means."""
    trained = run[run["round"] >= 1]
    last = rounds if rounds is not None else int(trained["round"].max())
    final = trained[trained["round"] > last * (1 - FINAL_FRACTION)]
    return float(final[column].mean()), float(trained[column].mean())
