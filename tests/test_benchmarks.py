"""Benchmark metrics against hand-computed values, and a short real Tune sweep plus its report."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from iif_ray import report


def _run(eval_returns: list[float], train_s: float) -> pd.DataFrame:
    return pd.DataFrame({"round": range(1, len(eval_returns) + 1),
                         "eval_return": eval_returns, "train_s": train_s})


def test_efficiency_on_a_hand_computed_pair(monkeypatch):
    monkeypatch.setattr(report, "SMOOTH", 1)
    ppo = _run([float(v) for v in range(11)], train_s=1.0)  # reaches v in round v + 1
    fast = _run([min(2.0 * r, 10.0) for r in range(11)], train_s=0.5)  # twice as fast
    eff = report.efficiency(ppo, fast)
    # Levels 1..10; fast reaches v in round ceil(v / 2) + 1.
    expected = [1 - (math.ceil(v / 2) + 1) / (v + 1) for v in range(1, 11)]
    assert eff.se_ave == pytest.approx(np.mean(expected))
    assert eff.se_peak == pytest.approx(1 - 6 / 11)
    # Time for fast to reach PPO's peak (6 rounds x 0.5 s) over PPO's whole run (11 s).
    assert eff.rt_peak == pytest.approx(1 - 3.0 / 11.0)
    assert eff.reached_peak


def test_a_level_never_reached_is_censored_at_r_plus_one(monkeypatch):
    monkeypatch.setattr(report, "SMOOTH", 1)
    ppo = _run([0.0, 1.0, 2.0, 3.0], train_s=1.0)
    flat = _run([0.0, 0.0, 0.0, 0.0], train_s=1.0)
    eff = report.efficiency(ppo, flat)
    levels = [0.3 * k for k in range(1, 11)]
    m_ppo = [next(r for r, v in enumerate([0, 1, 2, 3], 1) if v >= lv) for lv in levels]
    assert eff.se_ave == pytest.approx(np.mean([1 - 5 / m for m in m_ppo]))
    assert not eff.reached_peak and eff.rt_peak == pytest.approx(1 - 4 / 4)


def test_budget_note_names_whose_budget_was_cut():
    df = pd.DataFrame({"env": ["acrobot", "acrobot", "hopper"],
                       "env_steps": [51_200, 102_400, 61_440]})
    assert report._budget_note(df, "acrobot") is None  # reached the paper's budget
    df.loc[1, "env_steps"] = 10_240
    assert report._budget_note(df, "acrobot").startswith(
        "**reduced budget**: 51,200 of the paper's 102,400 env steps (50%)")
    assert "of the preset's 1,000,000 env steps (6%)" in report._budget_note(df, "hopper")


def test_smoothing_is_a_trailing_mean():
    curve = pd.Series([0.0, 3.0, 6.0, 3.0])
    assert report.smoothed(curve) == pytest.approx([0.0, 1.5, 3.0, 4.0])


def test_interval_is_the_student_t_interval():
    values = [0.2, 0.35, 0.1, 0.4]
    iv = report.interval(values)
    lo, hi = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values),
                              scale=stats.sem(values))
    assert iv.mean == pytest.approx(np.mean(values))
    assert iv.half == pytest.approx((hi - lo) / 2)
    assert report.interval([0.5]).n == 1 and math.isnan(report.interval([]).mean)


@pytest.mark.ray
@pytest.mark.slow
def test_short_tune_sweep_then_report(ray_local, tmp_path, monkeypatch):
    """Two real Tune trials (PPO and IIF, two rounds each), then the report from their CSV."""
    from iif_ray.cli import main

    monkeypatch.delenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", raising=False)
    out = tmp_path / "sweep"
    assert main(["sweep", "benchmark", "--envs", "cartpole", "--algos", "ppo,iif", "--seeds",
                 "1", "--budget-scale", "0.04", "--eval-episodes", "3",
                 "--out", str(out)]) == 0
    rounds = pd.read_csv(out / "rounds.csv")
    assert sorted(rounds.algo.unique()) == ["iif", "ppo"]
    assert rounds.groupby("algo")["round"].max().tolist() == [2, 2]
    assert (rounds.eval_episodes == 3).all() and rounds.eval_return.notna().all()
    iif = rounds[rounds.algo == "iif"]
    assert (iif.frac_dropped > 0).all() and (rounds[rounds.algo == "ppo"].frac_dropped == 0).all()
    assert ((rounds.train_s > 0) & (rounds.sampling_s > 0) & (rounds.update_s > 0)).all()

    (out / report.BENCH_SB3).write_text("cartpole/envs=1: ours 1.00 s/round, SB3 0.50 s/round\n")
    assert main(["report", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "```\ncartpole/envs=1: ours 1.00 s/round, SB3 0.50 s/round\n```" in text
    assert "cartpole" in text and "SE_ave" in text
    assert ("**reduced budget**: 4,096 of the preset's 102,400 env steps (4%); early learning "
            "only (not in the paper)") in text
    assert (out / "curves_cartpole.png").stat().st_size > 1000


def test_head_init_ablation_grid_carries_the_init_and_its_label():
    """The ablation sweep changes only the model's output-layer init and the algo label."""
    from pathlib import Path

    from iif_ray.algorithm import IIFPPO
    from iif_ray.sweeps import ALGO_KEY, SweepOptions, grid_space, load_sweep

    sweep = load_sweep(str(Path(__file__).parents[1] / "tune_experiments" / "head_init.py"))
    opts = SweepOptions(algos=["ppo", "iif"], seeds=2)
    plain, budget = grid_space("lunarlander", opts)
    ablation, ablation_budget = grid_space("lunarlander", sweep.ablation_options(opts))
    assert budget == ablation_budget == 307_200
    labels = [d[ALGO_KEY] for d in ablation["learner_config_dict"]["grid_search"]]
    assert labels == ["ppo-sb3init", "iif-sb3init"]
    assert ablation["seed"] == {"grid_search": [0, 1]}

    def trial_model(params):  # what a trial gets: Tune resolves the grid, RLlib from_dict
        params = {**params, "seed": 0,
                  "learner_config_dict": params["learner_config_dict"]["grid_search"][0]}
        return dict(IIFPPO.get_default_config().update_from_dict(params).model_config)

    got, base = trial_model(ablation), trial_model(plain)
    assert got.pop("head_output_gains") == {"pi": 0.01, "vf": 1.0}
    assert "head_output_gains" not in base and got == base


def test_grid_tag_separates_grids_and_repeats_for_the_same_command():
    from iif_ray.sweeps import SweepOptions

    tag = SweepOptions().grid_tag()
    assert tag == "seeds0-2" and SweepOptions(envs=["acrobot"]).grid_tag() == tag
    others = {SweepOptions(seeds=2, first_seed=3).grid_tag(),
              SweepOptions(algos=["ppo"]).grid_tag(),
              SweepOptions(budget_scale=0.06).grid_tag(),
              SweepOptions(num_envs=8).grid_tag(),
              SweepOptions(eval_episodes=5).grid_tag()}
    assert len(others) == 5 and tag not in others
    assert SweepOptions(seeds=2, first_seed=3, algos=["ppo"]).grid_tag() == "seeds3-4-ppo"
