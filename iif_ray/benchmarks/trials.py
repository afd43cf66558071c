"""Benchmark trials: a paper preset plus per-round evaluation and the round record.

Every benchmark trial is an :class:`~iif_ray.rllib.IIFPPO` built from a preset. On top of
training it evaluates the *stochastic* policy after every round on a separate evaluation
EnvRunner (vectorised, one sub-environment per episode, so evaluation costs about as many
vector steps as one episode lasts) and adds the round record
(:mod:`iif_ray.benchmarks.records`) to each result under ``bench``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ray.rllib.callbacks.callbacks import RLlibCallback
from ray.rllib.utils.annotations import override

from iif_ray.benchmarks.records import RECORD_KEY, record_from_result
from iif_ray.presets import Preset
from iif_ray.rllib import IIFConfig, build_config

TRAIN_RETURN_WINDOW = 20  # train_return: mean of the last 20 training episodes

# Evaluation episodes per round that a 2-core machine can afford, per environment (the paper
# used 1000, or 100 for highway and BipedalWalker). Short-episode tasks get more.
EVAL_EPISODES = {
    "frozenlake": 50, "cartpole": 10, "acrobot": 10, "minigrid": 20, "lunarlander": 10,
    "highway": 5, "bipedalwalker": 5, "hopper": 5,
}


class BenchCallbacks(RLlibCallback):
    """Times evaluation and writes the round record into every result."""

    @override(RLlibCallback)
    def on_evaluate_start(self, *, algorithm, **kwargs) -> None:
        algorithm._iif_eval_t0 = time.perf_counter()

    @override(RLlibCallback)
    def on_evaluate_end(self, *, algorithm, **kwargs) -> None:
        algorithm._iif_eval_s = time.perf_counter() - getattr(algorithm, "_iif_eval_t0",
                                                              time.perf_counter())

    @override(RLlibCallback)
    def on_train_result(self, *, algorithm, result: dict, **kwargs) -> None:
        eval_s = getattr(algorithm, "_iif_eval_s", 0.0)
        algorithm._iif_eval_s = 0.0
        result[RECORD_KEY] = record_from_result(result, eval_s)


@dataclass(frozen=True)
class TrialSpec:
    """One benchmark trial: preset, algorithm, seed, evaluation episodes, sampling layout."""

    preset: Preset
    algo: str
    seed: int
    eval_episodes: int
    num_envs: int = 1


def trial_config(spec: TrialSpec, attribution: dict[str, Any] | None = None) -> IIFConfig:
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
