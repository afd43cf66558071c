"""Stable-Baselines3 PPO with the presets' hyperparameters, orchestrated by Tune.

    iif-ray sweep sb3_baseline --envs acrobot,lunarlander --seeds 3 --out results

Needs the optional dependency (``pip install -e '.[bench]'``). Each trial trains SB3 PPO for
the preset's budget and evaluates the stochastic policy after every round with the same
episode count as the IIF benchmark; rows land in ``<out>/rounds.csv`` with algo ``sb3-ppo``,
so ``iif-ray report`` puts them beside our PPO.
"""

from __future__ import annotations

import math
from pathlib import Path

from ray import tune

from iif_ray.experiments.options import SweepOptions
from iif_ray.experiments.progress import console_output
from iif_ray.experiments.results import LABEL_KEY
from iif_ray.experiments.sb3 import SB3_ALGO, sb3_trainable
from iif_ray.experiments.sweeps import resumable_tuner
from iif_ray.presets import get_preset


def tuners(opts: SweepOptions):
    for env in opts.envs or ["acrobot", "lunarlander"]:
        preset = get_preset(env)
        rounds = math.ceil(preset.rounds * opts.budget_scale)
        yield env, resumable_tuner(
            tune.with_resources(sb3_trainable, {"cpu": 1}),
            param_space={
                "preset": env,
                "rounds": rounds,
                "eval_episodes": opts.eval_episodes,
                "seed": tune.grid_search(opts.seed_list),
                "learner_config_dict": {LABEL_KEY: SB3_ALGO},
            },
            tune_config=tune.TuneConfig(max_concurrent_trials=opts.max_concurrent),
            run_config=tune.RunConfig(name=f"sb3-{env}-{opts.grid_tag()}",
                                      storage_path=str(Path(opts.out).resolve() / "tune"),
                                      **console_output(opts.verbose, rounds)),
        )
