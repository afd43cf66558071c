"""From what a benchmark trial reports to the round rows the report reads.

A benchmark trial carries two keys of its own in ``config.learner_config_dict`` (it survives
checkpoints and lets Tune grid over it); neither has any effect on training:

* ``"bench_algo"`` (:data:`LABEL_KEY`): the trial's algorithm label, read back by the sweep
  export;
* ``"bench_snapshots"`` (:data:`SNAPSHOT_KEY`): ``{"root": dir, "env": name, "final_round":
  N}``, where the trial saves its per-round policy weights and the round it stops at.

and reports its round row under :data:`ROUND_ROW_KEY` in every result. The key strings are
the ones earlier sweeps stored, so their Tune experiments still read. The schema of the record
itself is :mod:`iif_ray.reporting.rounds`; this module is the RLlib/Tune side of it, which is
why it lives with the experiments and not with the Ray-free reporting.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import pandas as pd

from iif_ray.reporting.rounds import ROUND_COLUMNS, ROUND_FIELDS, as_float, round_row
from iif_ray.rllib.results import iif_metrics
from iif_ray.rllib.settings import CONFIG_KEY

LABEL_KEY = "bench_algo"
SNAPSHOT_KEY = "bench_snapshots"
ROUND_ROW_KEY = "bench"


def round_row_from_result(result: dict[str, Any], eval_s: float) -> dict[str, float]:
    """The record of one RLlib round, from ``algo.train()``'s result and its evaluation time."""
    iif = iif_metrics(result)
    ev = result.get("evaluation", {}).get("env_runners", {})
    er = result.get("env_runners", {})
    filter_s = as_float(iif.get("filter_s"), 0.0)
    update_s = as_float(iif.get("update_s"), 0.0)
    train_s = as_float(result.get("time_this_iter_s")) - eval_s
    return round_row(
        env_steps=as_float(result.get("num_env_steps_sampled_lifetime"), 0.0),
        eval_return=as_float(ev.get("episode_return_mean")),
        eval_episodes=as_float(ev.get("num_episodes"), 0.0),
        train_return=as_float(er.get("episode_return_mean")),
        frac_dropped=as_float(iif.get("frac_dropped"), 0.0),
        scoring_s=as_float(iif.get("scoring_s"), 0.0),
        filter_s=filter_s,
        update_s=update_s,
        sampling_s=train_s - filter_s - update_s,
        eval_s=eval_s,
        train_s=train_s,
    )


def trial_label(config: dict[str, Any]) -> str:
    """A trial's algorithm label (``iif``, ``ppo``, ``sb3-ppo``, ``iif-p0.125``, ...)."""
    learner_dict = config.get("learner_config_dict", {})
    algo = learner_dict.get(LABEL_KEY, "unknown")
    if algo.endswith("-p-search"):  # one label per sampled drop fraction
        algo = f"iif-p{learner_dict[CONFIG_KEY]['drop_fraction']:.3f}"
    return algo


def rounds_from_results(env: str, results: Iterable) -> pd.DataFrame:
    """Tidy ``rounds.csv`` rows from a Tune ``ResultGrid``: exactly one row per trial and round.

    A trial restored from a checkpoint (a resumed sweep, or Tune's own retry after a failure)
    trains again the rounds after that checkpoint, and Tune appends them to the trial's
    results after the first attempt's: the latest report of a round wins.
    """
    frames = []
    for result in results:
        if result.metrics_dataframe is None or result.metrics_dataframe.empty:
            continue
        df = result.metrics_dataframe
        out = pd.DataFrame({
            "env": env,
            "algo": trial_label(result.config),
            "seed": int(result.config["seed"]),
            "round": df["training_iteration"].astype(int),
        })
        for col in ROUND_FIELDS:
            out[col] = df.get(f"{ROUND_ROW_KEY}/{col}", math.nan)
        frames.append(out.drop_duplicates("round", keep="last"))
    if not frames:
        return pd.DataFrame(columns=list(ROUND_COLUMNS))
    return pd.concat(frames, ignore_index=True).sort_values(["env", "algo", "seed", "round"])
