"""Ablation: PPO with Stable-Baselines3's output-layer init (policy gain 0.01, value gain 1).

    iif-ray sweep head_init --envs lunarlander --algos ppo --seeds 3 --out results

RLlib's PPO catalog leaves both output layers at torch's default init; SB3, whose PPO the
paper trains, makes them orthogonal with gains 0.01 and 1, so its first policy is nearly
uniform. This grid is the benchmark grid with that init; rows land in ``<out>/rounds.csv``
labelled ``<algo>-sb3init`` beside the plain ones.
"""

from __future__ import annotations

from dataclasses import replace

from iif_ray.experiments.options import SweepOptions
from iif_ray.experiments.sweeps import benchmark_tuner

SB3_HEAD_GAINS = {"pi": 0.01, "vf": 1.0}


def ablation_options(opts: SweepOptions) -> SweepOptions:
    return replace(opts, model_overrides={"head_output_gains": SB3_HEAD_GAINS},
                   label_suffix="-sb3init")


def tuners(opts: SweepOptions):
    opts = ablation_options(opts)
    for env in opts.envs or ["lunarlander"]:
        yield env, benchmark_tuner(env, opts, name=f"head-init-{env}")
