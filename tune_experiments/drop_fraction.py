"""ASHA search over IIF's drop fraction p: the Tune example to copy.

    iif-ray sweep drop_fraction --envs acrobot --seeds 8 --budget-scale 0.5 --out runs/p-search

``--seeds`` is the number of sampled configurations here. Each samples p log-uniformly in
[0.05, 0.9] and trains IIF; ASHA stops the weak ones early on the evaluation return
(stochastic policy, evaluated every round). The paper found gentle p (12.5%) best on harder
tasks and aggressive p (50%) on simpler ones; this search asks the same question of your
environment. Results land in ``<out>/rounds.csv`` (algo column ``iif-p<value>``) and Tune's own
experiment directory, where ``ResultGrid.get_best_result()`` gives the best p.
"""

from __future__ import annotations

import math
from pathlib import Path

from ray import tune
from ray.tune.schedulers import ASHAScheduler

from iif_ray.experiments.options import SweepOptions
from iif_ray.experiments.progress import console_output
from iif_ray.experiments.results import LABEL_KEY
from iif_ray.experiments.sweeps import resumable_tuner
from iif_ray.experiments.trials import EVAL_EPISODES, TrialSpec, trial_config
from iif_ray.presets import get_preset
from iif_ray.rllib import IIFPPO
from iif_ray.rllib.settings import CONFIG_KEY


def tuners(opts: SweepOptions):
    for env in opts.envs or ["acrobot"]:
        preset = get_preset(env)
        rounds = max(4, math.ceil(preset.rounds * opts.budget_scale))
        config = trial_config(TrialSpec(preset, "iif", opts.first_seed,
                                        opts.eval_episodes or EVAL_EPISODES.get(env, 10)))
        params = config.to_dict()
        p = tune.loguniform(0.05, 0.9)
        params["learner_config_dict"] = {
            **params["learner_config_dict"],
            CONFIG_KEY: {**params["learner_config_dict"][CONFIG_KEY], "drop_fraction": p},
            LABEL_KEY: "iif-p-search",
        }
        yield env, resumable_tuner(
            IIFPPO,
            param_space=params,
            tune_config=tune.TuneConfig(
                num_samples=opts.seeds,
                metric="bench/eval_return",
                mode="max",
                scheduler=ASHAScheduler(time_attr="training_iteration", max_t=rounds,
                                        grace_period=max(2, rounds // 8), reduction_factor=2),
                max_concurrent_trials=opts.max_concurrent,
            ),
            run_config=tune.RunConfig(
                name=f"drop-fraction-{env}-{opts.grid_tag()}",
                storage_path=str(Path(opts.out).resolve() / "tune"),
                stop={"training_iteration": rounds},
                checkpoint_config=tune.CheckpointConfig(
                    checkpoint_frequency=opts.checkpoint_every, checkpoint_at_end=True,
                    num_to_keep=1),
                **console_output(opts.verbose, rounds),
            ),
        )
