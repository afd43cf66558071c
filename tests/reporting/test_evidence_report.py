"""The evidence report: rliable numbers against direct library calls on the same arrays, the
paired paper metrics on a hand-computed pair, and verdicts that follow the intervals."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from rliable import library as rly
from rliable import metrics as rly_metrics

from iif_ray.presets import PRESETS
from iif_ray.reporting import evidence, metrics, report, tables
from iif_ray.reporting import stats as st
from iif_ray.reporting.rounds import ROUND_COLUMNS

ROUNDS = 20


@pytest.fixture(autouse=True)
def _fewer_bootstrap_reps(monkeypatch):
    """Fewer replications keep the suite quick; the direct calls below use the same count."""
    monkeypatch.setattr(st, "REPS", 500)


def _write(directory, curves: dict[str, np.ndarray], env="frozenlake", train_s=1.0):
    """rounds.csv + evals.csv for curves[algo] of shape (seeds, ROUNDS + 1), round 0 first."""
    rounds, evals = [], []
    for algo, curve in curves.items():
        for seed, values in enumerate(curve):
            for r, v in enumerate(values):
                evals.append({"env": env, "algo": algo, "seed": seed, "round": r,
                              "eval_return": v, "eval_se": 0.0, "eval_episodes": 0,
                              "eval_method": "exact", "eval_s": 0.01,
                              "snapshot": f"{algo}{seed}{r}"})
                if r:
                    rec = dict.fromkeys(ROUND_COLUMNS, 0.0)
                    rec.update(env=env, algo=algo, seed=seed, round=r, env_steps=2048 * r,
                               eval_return=float("nan"), train_s=train_s,
                               frac_dropped=0.0 if algo == "ppo" else 0.5)
                    rounds.append(rec)
    directory.mkdir(exist_ok=True)
    pd.DataFrame(rounds).to_csv(directory / "rounds.csv", index=False)
    pd.DataFrame(evals).to_csv(directory / "evals.csv", index=False)


def _curves(rate, seeds, rng, noise=0.02):
    r = np.arange(ROUNDS + 1)
    base = np.minimum(1.0, rate * r)[None, :].repeat(seeds, 0)
    out = np.clip(base + noise * rng.standard_normal(base.shape), 0, 1)
    out[:, 0] = 0.0
    return out


def _row(text: str, env: str, algo: str) -> list[str]:
    section = text.split(f"## {env}")[1]
    line = next(ln for ln in section.splitlines() if ln.startswith(f"| {algo} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def _est(cell: str) -> tuple[float, float, float]:
    p, lo, hi = map(float, re.match(r"(-?[\d.]+) \[(-?[\d.]+), (-?[\d.]+)\]", cell).groups())
    return p, lo, hi


@pytest.mark.filterwarnings("ignore::FutureWarning")  # arch, called directly here
def test_rliable_numbers_in_the_report_match_the_library(tmp_path):
    rng = np.random.default_rng(0)
    curves = {"ppo": _curves(0.04, 10, rng), "iif": _curves(0.06, 10, rng),
              "random": _curves(0.04, 10, rng)}
    _write(tmp_path, curves)
    text = report.write_report(tmp_path).read_text()

    last = curves["ppo"].shape[1] - 1
    final_rounds = [r for r in range(1, last + 1) if r > last * (1 - metrics.FINAL_FRACTION)]
    final = {a: c[:, final_rounds].mean(1, keepdims=True) for a, c in curves.items()}
    auc = {a: c[:, 1:].mean(1, keepdims=True) for a, c in curves.items()}
    state = np.random.RandomState(st.SEED)
    points, cis = rly.get_interval_estimates(
        final, lambda x: np.array([rly_metrics.aggregate_iqm(x)]), reps=st.REPS,
        random_state=state)
    for algo in curves:
        p, lo, hi = _est(_row(text, "frozenlake", algo)[4])
        assert p == pytest.approx(points[algo][0], abs=0.006)
        assert lo == pytest.approx(cis[algo][0][0], abs=0.006)
        assert hi == pytest.approx(cis[algo][1][0], abs=0.006)
    p_auc = rly.get_interval_estimates(auc, lambda x: np.array([rly_metrics.aggregate_iqm(x)]),
                                       reps=st.REPS, random_state=np.random.RandomState(0))[0]
    assert _est(_row(text, "frozenlake", "iif")[5])[0] == pytest.approx(p_auc["iif"][0],
                                                                        abs=0.006)
    poi_p, poi_ci = rly.get_interval_estimates(
        {"p": (auc["iif"], auc["ppo"])},
        lambda x, y: np.array([rly_metrics.probability_of_improvement(x, y)]), reps=st.REPS,
        random_state=np.random.RandomState(0))
    p, lo, hi = _est(_row(text, "frozenlake", "iif")[7])
    assert (p, lo, hi) == pytest.approx((poi_p["p"][0], poi_ci["p"][0][0], poi_ci["p"][1][0]),
                                        abs=0.006)
    # IIF learns 1.5x as fast here: the verdicts say so.
    assert "**Verdict.** IIF reaches PPO's peak in fewer rounds: **yes**" in text
    assert "over the whole run (AUC): **yes**" in text
    assert "evaluation: exact" in text and "none counted in RT" in text


def test_identical_algorithms_are_not_resolved(tmp_path):
    rng = np.random.default_rng(1)
    same = _curves(0.05, 10, rng, noise=0.05)
    _write(tmp_path, {"ppo": same, "iif": same[::-1].copy()})  # same runs, other seed order
    text = report.write_report(tmp_path).read_text()
    assert "final return beats PPO's at 95% confidence: **not resolved**" in text
    p = _est(_row(text, "frozenlake", "iif")[6])
    assert p[0] == pytest.approx(0.5) and p[1] < 0.5 < p[2]


def test_worse_algorithm_is_called_worse(tmp_path):
    rng = np.random.default_rng(2)
    _write(tmp_path, {"ppo": _curves(0.08, 10, rng), "iif": _curves(0.03, 10, rng)})
    text = report.write_report(tmp_path).read_text()
    assert "IIF reaches PPO's peak in fewer rounds: **no**" in text
    assert "over the whole run (AUC): **no**: PPO is better" in text


def test_paired_efficiency_hand_computed():
    ppo = pd.DataFrame({"round": range(11), "eval_return": np.arange(11.0),
                        "clock_s": np.arange(11.0)})
    fast = pd.DataFrame({"round": range(11), "eval_return": np.minimum(2.0 * np.arange(11), 10),
                         "clock_s": 0.5 * np.arange(11)})
    eff = metrics.paired_efficiency(ppo, fast, tol=0.0)
    # Levels 1..10 reached by PPO in round v, by fast in round ceil(v / 2).
    expected = [1 - np.ceil(v / 2) / v for v in range(1, 11)]
    assert eff.se_ave == pytest.approx(np.mean(expected))
    assert eff.se_peak == pytest.approx(0.5)
    assert eff.rt_peak == pytest.approx(1 - 2.5 / 10.0)  # 5 rounds x 0.5 s over PPO's 10 s
    never = pd.DataFrame({"round": range(11), "eval_return": np.zeros(11),
                          "clock_s": np.arange(11.0)})
    censored = metrics.paired_efficiency(ppo, never, tol=0.0)
    assert not censored.reached_peak and censored.se_peak == pytest.approx(1 - 11 / 10)


def test_aggregate_over_environments(tmp_path):
    rng = np.random.default_rng(3)
    _write(tmp_path, {"ppo": _curves(0.05, 6, rng), "iif": _curves(0.05, 6, rng)})
    rounds = pd.read_csv(tmp_path / "rounds.csv")
    evals = pd.read_csv(tmp_path / "evals.csv")
    rounds2, evals2 = rounds.assign(env="minigrid"), evals.assign(env="minigrid")
    pd.concat([rounds, rounds2]).to_csv(tmp_path / "rounds.csv", index=False)
    pd.concat([evals, evals2]).to_csv(tmp_path / "evals.csv", index=False)
    text = report.write_report(tmp_path).read_text()
    assert "## All environments (normalised scores)" in text
    assert (tmp_path / "profile_final.png").stat().st_size > 1000


def test_variant_cells_are_compared_with_their_own_ppo(tmp_path):
    """``iif-restart`` is judged against ``ppo-restart``, ``ppo-restart`` against ``ppo``."""
    rng = np.random.default_rng(4)
    _write(tmp_path, {"ppo": _curves(0.05, 6, rng), "iif": _curves(0.05, 6, rng),
                      "ppo-restart": _curves(0.05, 6, rng),
                      "iif-restart": _curves(0.05, 6, rng), "iif-p0.25": _curves(0.05, 6, rng)})
    text = report.write_report(tmp_path).read_text()
    assert _row(text, "frozenlake", "iif-restart")[1] == "ppo-restart"
    assert _row(text, "frozenlake", "ppo-restart")[1] == "ppo"
    assert _row(text, "frozenlake", "iif-p0.25")[1] == "ppo"
    assert _row(text, "frozenlake", "ppo")[1] == "-"
    assert "**Verdict (iif-restart).** `iif-restart` reaches `ppo-restart`'s peak" in text


def _section(text: str, title: str) -> str:
    return text.split(title)[1].split("\n## ")[0].split("\n### ")[0]


def test_protocol_gain_is_traced_to_the_protocol_when_the_filter_adds_nothing(tmp_path):
    """IIF restarting beats PPO running on, but PPO restarting is as fast: the protocol."""
    rng = np.random.default_rng(5)
    slow, fast = _curves(0.04, 8, rng), _curves(0.08, 8, rng)
    _write(tmp_path, {"ppo": slow, "iif": slow.copy(), "ppo-sb3init": slow.copy(),
                      "ppo-restart-sb3init": fast, "iif-restart-sb3init": fast.copy()})
    text = report.write_report(tmp_path).read_text()
    section = _section(text, "### frozenlake: the paper's protocol")
    assert "it comes from the **protocol**, not the filter" in section
    paper = next(ln for ln in section.splitlines() if ln.startswith("| the paper's"))
    cells = [c.strip() for c in paper.strip("|").split("|")]
    assert cells[1] == "`iif-restart-sb3init` vs `ppo-sb3init`" and cells[2] == "8"
    # The paired final difference is the mean of per-seed differences (a direct oracle).
    df = evidence.evaluated_rounds(tmp_path)
    diffs = [metrics.run_scores(tables.runs_of(df, "frozenlake", "iif-restart-sb3init")[s])[0]
             - metrics.run_scores(tables.runs_of(df, "frozenlake", "ppo-sb3init")[s])[0]
             for s in range(8)]
    assert _est(cells[4])[0] == pytest.approx(np.mean(diffs), abs=0.05)
    assert cells[7].startswith("fewer rounds")
    # Rows for cells that were not run are left out rather than shown empty.
    assert "restart per round, RLlib init" not in section


def test_protocol_gain_is_the_filters_when_it_holds_within_the_cell(tmp_path):
    rng = np.random.default_rng(6)
    slow = _curves(0.04, 8, rng)
    _write(tmp_path, {"ppo": slow, "ppo-sb3init": slow.copy(),
                      "ppo-restart-sb3init": _curves(0.04, 8, rng),
                      "iif-restart-sb3init": _curves(0.08, 8, rng)})
    text = report.write_report(tmp_path).read_text()
    assert "it comes from the **filter**" in text


def test_filter_is_followed_across_the_cells_it_was_run_in(tmp_path):
    """Faster within the paper's cell, identical to PPO in the continuous RLlib cell: the
    verdict names both, so a gain confined to one protocol reads as such."""
    rng = np.random.default_rng(11)
    slow = _curves(0.04, 8, rng)
    _write(tmp_path, {"ppo": slow, "iif": slow.copy(), "ppo-sb3init": slow.copy(),
                      "ppo-restart-sb3init": _curves(0.04, 8, rng),
                      "iif-restart-sb3init": _curves(0.08, 8, rng)})
    verdict = next(ln for ln in report.write_report(tmp_path).read_text().splitlines()
                   if ln.startswith("**Verdict (protocol).**"))
    assert "it comes from the **filter**" in verdict
    assert ("Across the 2 cells, the filter alone (IIF against PPO under the same protocol) "
            "reaches PPO's peak in fewer rounds in: restart per round, SB3 init; in more rounds "
            "in: none; not resolved in: continuous, RLlib init.") in verdict


def test_protocol_without_a_gain_says_neither(tmp_path):
    rng = np.random.default_rng(7)
    same = _curves(0.05, 8, rng)
    _write(tmp_path, {"ppo": same, "ppo-sb3init": same.copy(), "ppo-restart-sb3init": same.copy(),
                      "iif-restart-sb3init": same.copy()})
    text = report.write_report(tmp_path).read_text()
    assert "The paper's comparison itself is **not resolved**" in text


def test_p_sensitivity_rows_are_ordered_by_p_with_drop_all_last(tmp_path):
    rng = np.random.default_rng(8)
    _write(tmp_path, {a: _curves(0.05, 5, rng) for a in
                      ("ppo", "iif", "iif-p0.5", "iif-p0.0625", "iif-negative")})
    text = report.write_report(tmp_path).read_text()
    section = _section(text, "### frozenlake: sensitivity to p")
    labels = [ln.split("|")[1].strip() for ln in section.splitlines() if ln.startswith("| p =")
              or ln.startswith("| negative")]
    preset_p = PRESETS["frozenlake"].drop_fraction
    expected = sorted([0.0625, preset_p, 0.5])
    assert labels == [f"p = {p:g}" for p in expected] + ["negative (all)"]
    # The paper's Table 2 figure sits beside each p it reports, a dash where it has none.
    paper = {ln.split("|")[1].strip(): ln.strip("|").split("|")[-1].strip()
             for ln in section.splitlines() if ln.startswith(("| p =", "| negative"))}
    assert paper["p = 0.0625"] == "-"
    assert paper["p = 0.5"] == "19.6 ± 8.4" and paper["negative (all)"] == "15.9 ± 5.5"
    assert "### frozenlake: the paper's protocol" not in text


def test_p_reading_names_the_p_that_is_resolved_faster(tmp_path):
    """Only p = 0.0625 learns faster; the other variants copy PPO's curves exactly."""
    rng = np.random.default_rng(10)
    ppo = _curves(0.04, 6, rng)
    _write(tmp_path, {"ppo": ppo, "iif": ppo.copy(), "iif-negative": ppo.copy(),
                      "iif-p0.0625": _curves(0.08, 6, rng)})
    section = _section(report.write_report(tmp_path).read_text(),
                       "### frozenlake: sensitivity to p")
    reading = next(ln for ln in section.splitlines() if ln.startswith("**Reading (p).**"))
    assert "to its peak at: p = 0.0625; more at: none." in reading


def test_points_off_the_common_round_grid_are_left_out(tmp_path):
    """Runs evaluated every 5 rounds; one also at round 7 (evaluated while still training),
    one stopped at round 10: round 7 goes, the short run's rounds stay."""
    rows = [("ppo", 0, r) for r in (0, 5, 10, 15, 20)]
    rows += [("iif", 0, r) for r in (0, 5, 7, 10, 15, 20)]
    rows += [("iif", 1, r) for r in (0, 5, 10)]
    df = pd.DataFrame([{"env": "lunarlander", "algo": a, "seed": s, "round": r}
                       for a, s, r in rows])
    kept = df[evidence.on_common_grid(df)]
    assert 7 not in set(kept["round"])
    assert len(kept) == len(df) - 1

    rng = np.random.default_rng(9)
    _write(tmp_path, {"ppo": _curves(0.05, 4, rng), "iif": _curves(0.05, 4, rng)})
    evals = pd.read_csv(tmp_path / "evals.csv")
    on_grid = (evals["round"] % 5 == 0) | ((evals.algo == "iif") & (evals.seed == 2)
                                           & (evals["round"] == 7))
    evals[on_grid].to_csv(tmp_path / "evals.csv", index=False)
    text = report.write_report(tmp_path).read_text()
    assert "1 evaluation point(s) off the common round grid left out" in text
