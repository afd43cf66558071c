"""The LM sweep's report section: rliable numbers against direct library calls on the same
arrays, "lower is better" handled for the toxic rate, paired differences, unfinished runs."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from rliable import metrics

from iif_ray.lm.trainer import PROGRESS_FIELDS
from iif_ray.reporting import lm as lm_report
from iif_ray.reporting import stats as st
from iif_ray.reporting.rounds import run_name
from iif_ray.run import ProgressWriter
from tests.reporting.rliable_oracle import rliable_interval

ROUNDS, EVAL_EVERY, SEEDS = 20, 2, 6


@pytest.fixture(autouse=True)
def _fewer_bootstrap_reps(monkeypatch):
    monkeypatch.setattr(st, "REPS", 500)


def _write_run(root: Path, algo: str, seed: int, toxic: np.ndarray, reward: np.ndarray,
               rounds: int = ROUNDS) -> None:
    """One LM run's progress.csv, written by the run model's writer with the LM schema."""
    out = root / lm_report.LM_RUNS / run_name(algo, seed)
    out.mkdir(parents=True)
    writer = ProgressWriter(out, PROGRESS_FIELDS)
    for k in range(1, rounds + 1):
        row = {"round": k, "reward_mean": 0.0, "frac_dropped": 0.0 if algo == "ppo" else 0.3,
               "round_s": 2.0, "generate_s": 0.5, "scoring_s": 0.0 if algo == "ppo" else 0.4,
               "update_s": 1.0}
        if k % EVAL_EVERY == 0:
            row.update(eval_toxic_rate=toxic[k // EVAL_EVERY - 1],
                       eval_reward=reward[k // EVAL_EVERY - 1], eval_negativity=0.0)
        writer.write(row)
    writer.close()


def _section(text: str, title: str) -> str:
    return text.split(f"### {title}")[1].split("###")[0]


def _cells(section: str, algo: str) -> list[str]:
    line = next(ln for ln in section.splitlines() if ln.startswith(f"| {algo} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def _est(cell: str) -> tuple[float, float, float]:
    return tuple(map(float, re.match(r"(-?[\d.]+) \[(-?[\d.]+), (-?[\d.]+)\]", cell).groups()))


@pytest.mark.filterwarnings("ignore::FutureWarning")  # arch, called directly here
def test_lm_section_matches_rliable_and_reads_lower_toxicity_as_better(tmp_path):
    rng = np.random.default_rng(0)
    points = ROUNDS // EVAL_EVERY
    curves = {}
    for algo, level in (("ppo", 0.10), ("iif", 0.05), ("random", 0.10)):
        toxic = np.clip(level + 0.01 * rng.standard_normal((SEEDS, points)), 0, 1)
        reward = 5 + rng.standard_normal((SEEDS, points))
        curves[algo] = (toxic, reward)
        for s in range(SEEDS):
            _write_run(tmp_path, algo, s, toxic[s], reward[s])
    _write_run(tmp_path, "iif", SEEDS, np.zeros(points), np.zeros(points), rounds=7)

    text = "\n".join(lm_report.lm_sections(tmp_path))

    assert f"left out, not finished: {run_name('iif', SEEDS)} (round 7)" in text
    tox = _section(text, lm_report.METRICS[0].label)
    final_points = [i for i in range(points) if (i + 1) * EVAL_EVERY > ROUNDS * 0.9]
    final = {a: c[0][:, final_points].mean(1, keepdims=True) for a, c in curves.items()}
    auc = {a: c[0].mean(1, keepdims=True) for a, c in curves.items()}
    iqm_p, iqm_ci = rliable_interval(final, lambda x: np.array([metrics.aggregate_iqm(x)]))
    for algo in curves:
        p, lo, hi = _est(_cells(tox, algo)[3])
        assert (p, lo, hi) == pytest.approx(
            (iqm_p[algo][0], iqm_ci[algo][0][0], iqm_ci[algo][1][0]), abs=0.0006)
    # Lower toxicity is better: the probability is P(-iif > -ppo).
    poi_p, poi_ci = rliable_interval({"p": (-auc["iif"], -auc["ppo"])},
                              lambda x, y: np.array([metrics.probability_of_improvement(x, y)]))
    p, lo, hi = _est(_cells(tox, "iif")[6])
    assert (p, lo, hi) == pytest.approx((poi_p["p"][0], poi_ci["p"][0][0], poi_ci["p"][1][0]),
                                        abs=0.006)
    assert p == pytest.approx(1.0)
    diff = _est(_cells(tox, "iif")[8])[0]
    assert diff == pytest.approx(float(np.mean(auc["iif"] - auc["ppo"])), abs=0.0006)
    assert ("IIF's eval_toxic_rate is lower than PPO's at the end of the run: **yes**"
            in tox)
    # Random control drawn like PPO: not distinguishable.
    assert "`random`'s eval_toxic_rate is lower than PPO's at the end of the run: **not " \
           "resolved**" in tox
    timing = _section(text, "Time per round")
    assert _cells(timing, "iif")[5] == f"{0.4 / 1.0:.3f}"
    assert math.isclose(float(_cells(timing, "ppo")[1]), 2.0)


def test_no_lm_runs_no_section(tmp_path):
    assert lm_report.lm_sections(tmp_path) == []
