"""``iif-ray demo``: a real paired grid end to end, and readings that follow the interval."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from iif_ray.experiments.demo import MIN_SEEDS_FOR_READING, demo_reading, paired_scores
from iif_ray.reporting import stats as st


@pytest.mark.ray
@pytest.mark.slow
def test_demo_trains_evaluates_and_reads(ray_local, tmp_path, monkeypatch, capsys):
    from iif_ray.cli import main

    monkeypatch.delenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", raising=False)
    out = tmp_path / "demo"
    assert main(["demo", "--seeds", "1", "--rounds", "2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    evals = pd.read_csv(out / "evals.csv")
    assert sorted(set(evals.algo)) == ["iif", "ppo"] and sorted(set(evals["round"])) == [0, 1, 2]
    assert (evals.eval_method == "exact").all()
    assert "FrozenLake-v1, 2 rounds, 1 seed(s)" in text and "no reading" in text
    # One line per trial round, not Tune's per-trial configuration and status tables.
    assert "ppo seed 0: round 2/2" in text and "iif seed 0: round 2/2" in text
    assert "started with configuration" not in text and "Trial status" not in text


def _evals(ppo_final, iif_final):
    rows = []
    for seed, (p, i) in enumerate(zip(ppo_final, iif_final, strict=True)):
        for algo, v in (("ppo", p), ("iif", i)):
            for r in (1, 2):
                rows.append({"env": "frozenlake", "algo": algo, "seed": seed, "round": r,
                             "eval_return": v if r == 2 else v / 2})
    return pd.DataFrame(rows)


def test_reading_follows_the_bootstrap_interval(monkeypatch):
    monkeypatch.setattr(st, "REPS", 500)
    n = MIN_SEEDS_FOR_READING
    ahead = _evals(np.linspace(0.5, 0.6, n), np.linspace(0.7, 0.85, n))
    assert "IIF ahead at this budget" in demo_reading(ahead, "frozenlake")
    mixed = _evals([0.5, 0.6, 0.7, 0.5, 0.6], [0.6, 0.5, 0.6, 0.7, 0.5])
    assert "not resolved at this precision" in demo_reading(mixed, "frozenlake")
    behind = _evals(np.linspace(0.7, 0.85, n), np.linspace(0.5, 0.6, n))
    assert "PPO ahead at this budget" in demo_reading(behind, "frozenlake")
    scores = paired_scores(ahead, "frozenlake")
    assert scores.attrs["rounds"] == 2 and len(scores) == n
    assert np.allclose(scores.iif_mean, 0.75 * scores.iif_final)
