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


def test_ledger_harmful_flips_use_the_clean_group_relative_advantage():
    import pandas as pd

    # Group 0: clean rewards 1,1,0,0; row 0 flipped 1 -> 0 (a right answer pushed down).
    # Group 1: clean 0,0,0,1; row 5 flipped 0 -> 1: now 0,1,0,1 (a wrong one pushed up).
    # Group 2: clean 1,1,1,1; row 8 flipped to 0: pushed down where the clean update leaves
    # it alone. Group 3: clean 0,0,0,0, rows 12 and 13 flipped to 1: pushed up likewise.
    # Group 4: clean 1,0,0,0, row 16 flipped to 0: every reward 0, no gradient: not counted.
    reward = np.array([0, 1, 0, 0, 0, 1, 0, 1, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0],
                      dtype=float)
    corrupted = np.zeros(20, bool)
    corrupted[[0, 5, 8, 12, 13, 16]] = True
    group = np.arange(20) // 4
    frame = pd.DataFrame({"group": group, "reward": reward, "corrupted": corrupted})
    mean = frame.groupby("group")["reward"].transform("mean").to_numpy()
    frame["advantage"] = reward - mean  # the flipped rewards' (GRPO's sign)
    harmful = lm_report.ledger_harmful_flips(frame)
    assert np.flatnonzero(harmful).tolist() == [0, 5, 8, 12, 13]


def _write_arith_run(root: Path, algo: str, seed: int, accuracy: np.ndarray,
                     scores_find_flips: bool) -> None:
    """An arith run at 30% noise: run.json, progress.csv and (scoring algos) a ledger
    whose harmful flips get the lowest scores when ``scores_find_flips``."""
    from iif_ray.ledger import SEQUENCE_LEDGER_SCHEMA, LedgerWriter, ledger_columns
    from iif_ray.run import LM, write_run_spec

    out = root / lm_report.LM_RUNS / run_name(algo, seed)
    out.mkdir(parents=True)
    write_run_spec(out, {"task": "arith", "reward_noise": 0.3, "algo": algo}, LM)
    writer = ProgressWriter(out, PROGRESS_FIELDS)
    for k in range(1, ROUNDS + 1):
        row = {"round": k, "reward_mean": 0.5, "frac_dropped": 0.0, "round_s": 2.0,
               "generate_s": 0.5, "scoring_s": 0.4 if "iif" in algo else 0.0, "update_s": 1.0}
        if k % EVAL_EVERY == 0:
            row.update(eval_reward=accuracy[k // EVAL_EVERY - 1],
                       eval_greedy=accuracy[k // EVAL_EVERY - 1] + 0.1)
        writer.write(row)
    writer.close()
    if "iif" not in algo:
        return
    rng = np.random.default_rng(seed)
    ledger = LedgerWriter(str(out / "ledger"))
    n = 32
    for k in range(1, 4):
        clean = (rng.random(n) < 0.5).astype(float)
        corrupted = rng.random(n) < 0.3
        reward = np.where(corrupted, 1 - clean, clean)
        group = np.arange(n) // 4
        adv = reward - np.repeat(reward.reshape(-1, 4).mean(1), 4)
        frame = __import__("pandas").DataFrame({"group": group, "reward": reward,
                                                "corrupted": corrupted, "advantage": adv})
        harmful = lm_report.ledger_harmful_flips(frame)
        score = np.where(harmful, -1.0, 1.0) if scores_find_flips else rng.standard_normal(n)
        kept = score > 0
        cols = ledger_columns(
            iteration=k, env_steps=k * n, learner=0, schema=SEQUENCE_LEDGER_SCHEMA,
            group=group, prompt=np.array(["1+1="] * n, dtype=object),
            response=np.array(["2<eos>"] * n, dtype=object), response_tokens=np.full(n, 2),
            reward=reward, advantage=adv, logp=np.zeros(n), score=score, kept=kept,
            corrupted=corrupted)
        ledger.write(k, 0, cols)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_arith_section_has_its_metrics_the_group_filter_verdict_and_the_flip_table(tmp_path):
    rng = np.random.default_rng(1)
    points = ROUNDS // EVAL_EVERY
    level = {"ppo": 0.5, "group-filter": 0.55, "iif": 0.7, "group-filter+iif": 0.72}
    for algo, acc in level.items():
        for s in range(4):
            _write_arith_run(tmp_path, algo, s, acc + 0.01 * rng.standard_normal(points),
                             scores_find_flips=algo == "iif")
    text = "\n".join(lm_report.lm_sections(tmp_path))
    assert "## arith, 30% of rewards flipped: held-out evaluation" in text
    assert "eval_toxic_rate" not in text
    assert (tmp_path / "curves_arith-noise30_heldout.png").is_file()
    acc = _section(text, lm_report.TASK_METRICS["arith"][0].label)
    assert float(_cells(acc, "iif")[2]) == pytest.approx(0.7, abs=0.03)
    assert "**Verdict (iif vs group-filter, eval_reward).** IIF's eval_reward is higher " \
           "than `group-filter`'s at the end of the run: **yes**" in text
    assert "**Verdict (group-filter+iif vs group-filter, eval_greedy)." in text
    flips = _section(text, "Do the scores find the flipped rewards?")
    perfect, noise = _cells(flips, "iif"), _cells(flips, "group-filter+iif")
    assert _est(perfect[3])[0] == 1.0 and _est(perfect[4])[0] == 1.0
    assert (float(perfect[5]), float(perfect[6])) == (1.0, 0.0)
    assert 0.2 < _est(noise[3])[0] < 0.8  # random scores
    assert "| ppo |" not in flips  # nothing scored, no ledger
