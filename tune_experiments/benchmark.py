"""Benchmark grid: environment x algorithm {ppo, iif, random} x seed, with the paper presets.

Run it with::

    iif-ray sweep benchmark --envs frozenlake,acrobot --seeds 3 --out results
    iif-ray report results

One Tune experiment per environment (budgets and networks differ), each a grid over the
algorithms and seeds. Every trial evaluates the stochastic policy after every round on its own
evaluation EnvRunner and reports a flat ``bench`` record (see ``iif_ray.reporting.rounds``).
Trials checkpoint every 10 rounds and at the end; ``FailureConfig(max_failures=3)`` restarts a
failed trial from its last checkpoint, and running the same command again resumes an
interrupted experiment instead of starting over.
"""

from __future__ import annotations

from iif_ray.experiments.options import SweepOptions
from iif_ray.experiments.sweeps import benchmark_tuner

DEFAULT_ENVS = ["frozenlake", "acrobot", "minigrid", "lunarlander"]


def tuners(opts: SweepOptions):
    for env in opts.envs or DEFAULT_ENVS:
        yield env, benchmark_tuner(env, opts, name=f"benchmark-{env}")
