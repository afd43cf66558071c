"""The evidence grid: environment x {ppo, iif, random} x seed at the paper's budgets, with
every round's policy saved for exact or paired evaluation afterwards.

    iif-ray sweep evidence --seeds 10 --max-concurrent 2 --out runs/evidence
    iif-ray evaluate runs/evidence        # exact DP / paired Monte-Carlo, every snapshot
    iif-ray report runs/evidence

Trials evaluate nothing themselves (their rounds time training only); they save the policy
network after every round under ``<out>/policies``. One Tune experiment per environment;
rerunning the same command resumes it.
"""

from __future__ import annotations

from dataclasses import replace

from iif_ray.experiments.options import SweepOptions
from iif_ray.experiments.sweeps import benchmark_tuner

DEFAULT_ENVS = ["frozenlake", "minigrid", "acrobot", "lunarlander"]


def evidence_options(opts: SweepOptions) -> SweepOptions:
    return replace(opts, snapshots=True, eval_episodes=0)


def tuners(opts: SweepOptions):
    opts = evidence_options(opts)
    for env in opts.envs or DEFAULT_ENVS:
        yield env, benchmark_tuner(env, opts, name=f"evidence-{env}")
