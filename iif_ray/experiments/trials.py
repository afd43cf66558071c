"""Benchmark trials: a paper preset plus evaluation (or policy snapshots) and the round row.

Every benchmark trial is an :class:`~iif_ray.rllib.IIFPPO` built from a preset, and adds the
round row (:mod:`iif_ray.reporting.rounds`) to each result under ``bench``. It either

* evaluates the *stochastic* policy after every round on a separate evaluation EnvRunner
  (vectorised, one sub-environment per episode; quick, imprecise), or
* saves the policy after every round (:mod:`iif_ray.experiments.snapshots`) and evaluates
  nothing, leaving precise, paired evaluation to ``iif-ray evaluate`` after training.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ray.rllib.callbacks.callbacks import RLlibCallback
from ray.rllib.utils.annotations import override

from iif_ray.experiments.results import (
    ROUND_ROW_KEY,
    SNAPSHOT_KEY,
    round_row_from_result,
    trial_label,
)
from iif_ray.experiments.snapshots import run_snapshot_dir, write_plan, write_snapshot, write_spec
from iif_ray.presets import Preset
from iif_ray.rllib import IIFConfig, build_config
from iif_ray.rllib.module_bridge import policy_net
from iif_ray.rllib.results import DEFAULT_MODULE

TRAIN_RETURN_WINDOW = 20  # train_return: mean of the last 20 training episodes

# Evaluation episodes per round that a 2-core machine can afford, per environment (the paper
# used 1000, or 100 for highway and BipedalWalker). Short-episode tasks get more.
EVAL_EPISODES = {
    "frozenlake": 50, "cartpole": 10, "acrobot": 10, "minigrid": 20, "lunarlander": 10,
    "highway": 5, "bipedalwalker": 5, "hopper": 5,
}


def _snapshot_dir(algorithm) -> Any:
    """Where this trial saves its policies, or ``None`` when it does not."""
    config = algorithm.config
    where = (config.learner_config_dict or {}).get(SNAPSHOT_KEY)
    if not where:
        return None
    label = trial_label({"learner_config_dict": config.learner_config_dict})
    return run_snapshot_dir(where["root"], where["env"], label, config.seed)


def _save_policy(algorithm, round_: int, *, overwrite: bool) -> None:
    run_dir = _snapshot_dir(algorithm)
    if run_dir is None:
        return
    module = algorithm.get_module(DEFAULT_MODULE)  # synced with the learner after each update
    if round_ == 0:
        from ray.rllib.core.rl_module.rl_module import RLModuleSpec

        write_spec(run_dir, RLModuleSpec.from_module(module.unwrapped()))
        final = algorithm.config.learner_config_dict[SNAPSHOT_KEY].get("final_round")
        if final is not None:
            write_plan(run_dir, final)
    write_snapshot(run_dir, round_, policy_net(module).state_dict(), overwrite=overwrite)


class BenchCallbacks(RLlibCallback):
    """Times evaluation, saves policy snapshots, writes the round row into every result.

    ``on_train_result`` runs in ``log_result``, after Tune has timed the round, so neither
    the snapshot nor the record counts in ``time_this_iter_s``.
    """

    @override(RLlibCallback)
    def on_algorithm_init(self, *, algorithm, **kwargs) -> None:
        # A trial restored from a checkpoint is built fresh first: its round-0 file exists.
        _save_policy(algorithm, 0, overwrite=False)

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
        result[ROUND_ROW_KEY] = round_row_from_result(result, eval_s)
        _save_policy(algorithm, int(result["training_iteration"]), overwrite=True)


@dataclass(frozen=True)
class TrialSpec:
    """One benchmark trial: preset, algorithm, seed, evaluation, sampling layout.

    ``eval_episodes=0`` evaluates nothing in the trial; ``snapshot_root`` (a directory) saves
    the policy of every round there under the preset's name, with ``final_round`` (the round
    the sweep stops at) as the run's plan; ``restart_per_round`` samples every round from
    fresh, re-seeded episodes (``IIFConfig.protocol``).
    """

    preset: Preset
    algo: str
    seed: int
    eval_episodes: int
    num_envs: int = 1
    snapshot_root: str | None = None
    restart_per_round: bool = False
    final_round: int | None = None


def trial_config(spec: TrialSpec, attribution: dict[str, Any] | None = None) -> IIFConfig:
    """A benchmark trial: the preset's PPO semantics, evaluation or snapshots, callbacks."""
    config = build_config(spec.preset, algo=spec.algo, seed=spec.seed,
                          attribution=attribution, num_envs=spec.num_envs)
    if spec.restart_per_round:
        config.protocol(restart_per_round=True)
    if spec.snapshot_root:
        learner_dict = dict(config.learner_config_dict)
        learner_dict[SNAPSHOT_KEY] = {"root": str(spec.snapshot_root), "env": spec.preset.name,
                                      "final_round": spec.final_round}
        config.learner_config_dict = learner_dict
    config = config.reporting(metrics_num_episodes_for_smoothing=TRAIN_RETURN_WINDOW)
    n = spec.eval_episodes
    if n == 0:
        return config.callbacks(BenchCallbacks)
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
        .callbacks(BenchCallbacks)
    )
