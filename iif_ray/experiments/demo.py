"""The demo: a small paired PPO-vs-IIF grid, evaluated from snapshots, read with its interval.

It reuses the evidence machinery end to end (Tune grid with snapshots, ``evaluate``, the
report's run scores and rliable bootstrap), at a budget two cores finish in a few minutes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from rich.table import Table

from iif_ray.experiments.evaluate import EvaluateOptions, evaluate_sweep
from iif_ray.experiments.options import DemoOptions, SweepOptions
from iif_ray.experiments.sweeps import benchmark_tuner, fit_and_export
from iif_ray.presets import get_preset
from iif_ray.reporting import stats as st
from iif_ray.reporting.rounds import EVALS_CSV, read_evals

# A percentile bootstrap over fewer runs has too few distinct resamples and is far too narrow.
MIN_SEEDS_FOR_READING = 5


def run_demo(opts: DemoOptions, echo: Callable[[str], None] = print) -> tuple[Table, str]:
    """Train, evaluate, and return the per-seed table and the one-line reading."""
    preset = get_preset(opts.preset)
    sweep = SweepOptions(envs=[preset.name], algos=["ppo", "iif"], seeds=opts.seeds,
                         budget_scale=opts.rounds / preset.rounds, out=opts.out,
                         max_concurrent=opts.max_concurrent, snapshots=True, eval_episodes=0,
                         checkpoint_every=max(1, opts.rounds), verbose=opts.verbose)
    echo(f"training ppo and iif on {preset.env_id}, seeds 0-{opts.seeds - 1}, "
         f"{opts.rounds} rounds of {preset.steps_per_round} steps each")
    fit_and_export([(preset.name, benchmark_tuner(preset.name, sweep,
                                                  name=f"demo-{preset.name}"))], opts.out)
    evaluate_sweep(EvaluateOptions(out=opts.out), echo=echo)
    evals = read_evals(Path(opts.out) / EVALS_CSV)
    return demo_table(evals, preset.name), demo_reading(evals, preset.name)


def paired_scores(evals: pd.DataFrame, env: str) -> pd.DataFrame:
    """Per seed: PPO's and IIF's return after the last round and mean over rounds >= 1."""
    sub = evals[(evals.env == env) & (evals["round"] >= 1)]
    last = sub["round"].max()
    final = sub[sub["round"] == last].pivot_table(index="seed", columns="algo",
                                                  values="eval_return")
    mean = sub.pivot_table(index="seed", columns="algo", values="eval_return", aggfunc="mean")
    out = pd.DataFrame({"ppo_final": final["ppo"], "iif_final": final["iif"],
                        "ppo_mean": mean["ppo"], "iif_mean": mean["iif"]}).dropna()
    out.attrs["rounds"] = int(last)
    return out


def demo_table(evals: pd.DataFrame, env: str) -> Table:
    scores = paired_scores(evals, env)
    table = Table(title=f"{get_preset(env).env_id}: expected return of each run "
                        f"(exact or paired Monte-Carlo), {scores.attrs['rounds']} rounds")
    for col in ("seed", "PPO last round", "IIF last round", "IIF - PPO", "PPO mean",
                "IIF mean", "IIF - PPO"):
        table.add_column(col, justify="right")
    for seed, r in scores.iterrows():
        table.add_row(str(seed), f"{r.ppo_final:.3f}", f"{r.iif_final:.3f}",
                      f"{r.iif_final - r.ppo_final:+.3f}", f"{r.ppo_mean:.3f}",
                      f"{r.iif_mean:.3f}", f"{r.iif_mean - r.ppo_mean:+.3f}")
    return table


def demo_reading(evals: pd.DataFrame, env: str) -> str:
    """One line: the paired difference after the last round, its interval, what it supports."""
    scores = paired_scores(evals, env)
    diff = (scores.iif_final - scores.ppo_final).to_numpy()
    n, rounds = len(diff), scores.attrs["rounds"]
    head = (f"{get_preset(env).env_id}, {rounds} rounds, {n} seed(s): after the last round "
            f"PPO {scores.ppo_final.mean():.3f}, IIF {scores.iif_final.mean():.3f}; "
            f"IIF - PPO = {np.mean(diff):+.3f}")
    if n < MIN_SEEDS_FOR_READING:
        return (f"{head}; {n} seed(s) are too few for a bootstrap interval to mean anything: "
                f"no reading (use --seeds {MIN_SEEDS_FOR_READING} or more)")
    est = st.mean(diff)
    side = {1: "IIF ahead at this budget", -1: "PPO ahead at this budget",
            0: "not resolved at this precision"}[est.side(0.0)]
    return (f"{head} [95% bootstrap CI {est.lo:+.3f}, {est.hi:+.3f}, paired by seed]: "
            f"{side}.")
