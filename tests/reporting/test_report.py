"""Benchmark metrics against hand-computed values, and a short real Tune sweep plus its report."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from iif_ray.reporting import classic, metrics
from tests.reporting.rliable_oracle import rliable_interval


def _run(eval_returns: list[float], train_s: float) -> pd.DataFrame:
    return pd.DataFrame({"round": range(1, len(eval_returns) + 1),
                         "eval_return": eval_returns, "train_s": train_s})


def test_efficiency_on_a_hand_computed_pair(monkeypatch):
    monkeypatch.setattr(metrics, "SMOOTH", 1)
    ppo = _run([float(v) for v in range(11)], train_s=1.0)  # reaches v in round v + 1
    fast = _run([min(2.0 * r, 10.0) for r in range(11)], train_s=0.5)  # twice as fast
    eff = metrics.efficiency(ppo, fast)
    # Levels 1..10; fast reaches v in round ceil(v / 2) + 1.
    expected = [1 - (math.ceil(v / 2) + 1) / (v + 1) for v in range(1, 11)]
    assert eff.se_ave == pytest.approx(np.mean(expected))
    assert eff.se_peak == pytest.approx(1 - 6 / 11)
    # Time for fast to reach PPO's peak (6 rounds x 0.5 s) over PPO's whole run (11 s).
    assert eff.rt_peak == pytest.approx(1 - 3.0 / 11.0)
    assert eff.reached_peak


def test_a_level_never_reached_is_censored_at_r_plus_one(monkeypatch):
    monkeypatch.setattr(metrics, "SMOOTH", 1)
    ppo = _run([0.0, 1.0, 2.0, 3.0], train_s=1.0)
    flat = _run([0.0, 0.0, 0.0, 0.0], train_s=1.0)
    eff = metrics.efficiency(ppo, flat)
    levels = [0.3 * k for k in range(1, 11)]
    m_ppo = [next(r for r, v in enumerate([0, 1, 2, 3], 1) if v >= lv) for lv in levels]
    assert eff.se_ave == pytest.approx(np.mean([1 - 5 / m for m in m_ppo]))
    assert not eff.reached_peak and eff.rt_peak == pytest.approx(1 - 4 / 4)


def test_rounds_without_an_evaluation_are_skipped_not_read_as_misses(monkeypatch):
    """An LM run evaluates every few rounds (NaN in between): a level is reached in the
    round of the first evaluation at or above it."""
    monkeypatch.setattr(metrics, "SMOOTH", 1)
    nan = float("nan")
    ppo = _run([nan, 0.0, nan, 0.25, nan, 0.5, nan, 0.75, nan, 1.0], train_s=1.0)
    fast = _run([nan, 0.5, nan, 1.0, nan, 1.0, nan, 1.0, nan, 1.0], train_s=1.0)
    eff = metrics.efficiency(ppo, fast)
    # Levels 0.1..1.0: PPO reaches them in rounds 4,4,6,6,6,8,8,10,10,10; fast in 2 (up to
    # 0.5) and 4 (above).
    ppo_at, fast_at = [4, 4, 6, 6, 6, 8, 8, 10, 10, 10], [2] * 5 + [4] * 5
    reductions = [1 - f / p for f, p in zip(fast_at, ppo_at, strict=True)]
    assert eff.se_ave == pytest.approx(np.mean(reductions))
    assert eff.se_peak == pytest.approx(1 - 4 / 10)
    assert eff.rt_peak == pytest.approx(1 - 4 / 10) and eff.reached_peak


def test_budget_note_names_whose_budget_was_cut():
    df = pd.DataFrame({"env": ["acrobot", "acrobot", "hopper"],
                       "env_steps": [51_200, 102_400, 61_440]})
    assert classic._budget_note(df, "acrobot") is None  # reached the paper's budget
    df.loc[1, "env_steps"] = 10_240
    assert classic._budget_note(df, "acrobot").startswith(
        "**reduced budget**: 51,200 of the paper's 102,400 env steps (50%)")
    assert "of the preset's 1,000,000 env steps (6%)" in classic._budget_note(df, "hopper")


def test_smoothing_is_a_trailing_mean():
    curve = pd.Series([0.0, 3.0, 6.0, 3.0])
    assert metrics.smoothed(curve) == pytest.approx([0.0, 1.5, 3.0, 4.0])


@pytest.mark.filterwarnings("ignore::FutureWarning")  # arch, called directly here
def test_interval_is_rliables_bootstrap_of_the_mean_without_missing_values():
    from iif_ray.reporting import stats as st

    values = [0.2, 0.35, None, 0.1, float("nan"), 0.4]
    iv = st.mean(values)
    kept = np.array([[0.2], [0.35], [0.1], [0.4]])
    _, cis = rliable_interval({"x": kept}, lambda x: np.array([np.mean(x)]))
    assert iv.point == pytest.approx(0.2625)
    assert (iv.lo, iv.hi) == pytest.approx((cis["x"][0][0], cis["x"][1][0]))
    assert iv.lo < 0.2625 < iv.hi and iv.hi - iv.lo < 0.3
    assert st.mean([0.5]).fmt(digits=1) == "0.5 (one run)"
    assert st.mean([]).fmt() == "-"


def test_a_repeated_round_counts_once_the_latest_row(tmp_path):
    """rounds.csv keeps one row per (env, algo, seed, round), the latest (README); a file
    that repeats one (appended by hand, or an older writer) is read that way too."""
    from iif_ray.reporting.rounds import ROUND_COLUMNS, ROUND_FIELDS, load_rounds

    def row(k: int, value: float) -> dict:
        return {"env": "frozenlake", "algo": "ppo", "seed": 0, "round": k,
                **dict.fromkeys(ROUND_FIELDS, 1.0), "eval_return": value}

    rows = [row(1, 0.1), row(2, 0.2), row(1, 0.7), row(3, 0.3), row(2, 0.9)]
    pd.DataFrame(rows, columns=list(ROUND_COLUMNS)).to_csv(tmp_path / "rounds.csv",
                                                           index=False)
    got = load_rounds(tmp_path).sort_values("round")
    assert got["round"].tolist() == [1, 2, 3]
    assert got["eval_return"].tolist() == [0.7, 0.9, 0.3]  # the later row of each repeat
