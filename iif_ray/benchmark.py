"""Benchmark trials: paper presets plus evaluation and a flat per-round record.

Every benchmark trial is an :class:`~iif_ray.algorithm.IIFPPO` built from a preset. On top of
training it evaluates the *stochastic* policy after every round on a separate evaluation
EnvRunner (vectorised, one sub-environment per episode, so evaluation costs about as many
vector steps as one episode lasts) and adds one flat ``bench`` dict to each result, which is
what the report reads:

``env_steps, eval_return, eval_episodes, train_return, sampling_s, scoring_s, filter_s,
update_s, eval_s, train_s, frac_dropped``

``train_s`` is the round's wall-clock without evaluation (sampling + filtering + update), the
quantity wall-clock comparisons (RT_peak) use.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from ray.rllib.callbacks.callbacks import RLlibCallback

from iif_ray.presets import Preset, build_config

BENCH_KEY = "bench"
TRAIN_RETURN_WINDOW = 20  # train_return: mean of the last 20 training episodes

# Evaluation episodes per round that a 2-core machine can afford, per environment (the paper
# used 1000, or 100 for highway and BipedalWalker). Short-episode tasks get more.
EVAL_EPISODES = {
    "frozenlake": 50, "cartpole": 10, "acrobot": 10, "minigrid": 20, "lunarlander": 10,
    "highway": 5, "bipedalwalker": 5, "hopper": 5,
}


def _num(x: Any, default: float = math.nan) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return default


class BenchCallbacks(RLlibCallback):
    """Times evaluation and writes the flat ``bench`` record into every result."""

    def on_evaluate_start(self, *, algorithm, metrics_logger=None, **kwargs) -> None:
        algorithm._iif_eval_t0 = time.perf_counter()

    def on_evaluate_end(self, *, algorithm, metrics_logger=None, evaluation_metrics=None,
                        **kwargs) -> None:
        algorithm._iif_eval_s = time.perf_counter() - getattr(algorithm, "_iif_eval_t0",
                                                              time.perf_counter())

    def on_train_result(self, *, algorithm, metrics_logger=None, result: dict,
                        **kwargs) -> None:
        iif = result.get("learners", {}).get("default_policy", {}).get("iif", {})
        ev = result.get("evaluation", {}).get("env_runners", {})
        er = result.get("env_runners", {})
        eval_s = getattr(algorithm, "_iif_eval_s", 0.0)
        algorithm._iif_eval_s = 0.0
        iter_s = _num(result.get("time_this_iter_s"))
        filter_s = _num(iif.get("filter_s"), 0.0)
        update_s = _num(iif.get("update_s"), 0.0)
        train_s = iter_s - eval_s
        result[BENCH_KEY] = {
            "env_steps": _num(result.get("num_env_steps_sampled_lifetime"), 0.0),
            "eval_return": _num(ev.get("episode_return_mean")),
            "eval_episodes": _num(ev.get("num_episodes"), 0.0),
            "train_return": _num(er.get("episode_return_mean")),
            "frac_dropped": _num(iif.get("frac_dropped"), 0.0),
            "scoring_s": _num(iif.get("scoring_s"), 0.0),
            "filter_s": filter_s,
            "update_s": update_s,
            "sampling_s": train_s - filter_s - update_s,
            "eval_s": eval_s,
            "train_s": train_s,
        }


@dataclass(frozen=True)
class TrialSpec:
    preset: Preset
    algo: str
    seed: int
    eval_episodes: int
    num_envs: int = 1


def trial_config(spec: TrialSpec, attribution: dict[str, Any] | None = None):
    """A benchmark trial: the preset's PPO semantics, evaluation every round, callbacks."""
    config = build_config(spec.preset, algo=spec.algo, seed=spec.seed,
                          attribution=attribution, num_envs=spec.num_envs)
    n = spec.eval_episodes
    return (
        config
        .evaluation(
            evaluation_interval=1,
            evaluation_duration=n,
            evaluation_duration_unit="episodes",
            evaluation_num_env_runners=0,
            # Stochastic policy; the metrics window equals the episode count, so each
            # round's eval_return averages exactly that round's evaluation episodes.
            evaluation_config={"explore": True, "num_envs_per_env_runner": n,
                               "metrics_num_episodes_for_smoothing": n},
        )
        .reporting(metrics_num_episodes_for_smoothing=TRAIN_RETURN_WINDOW)
        .callbacks(BenchCallbacks)
    )
