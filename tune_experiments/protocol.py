"""Is the paper's gain the filter's, or its protocol's? LunarLander {ppo, iif} x {continuous,
restart-per-round} x {RLlib init, SB3 init}, with snapshots for ``iif-ray evaluate``.

    iif-ray sweep protocol --seeds 10 --max-concurrent 2 --out runs/evidence
    iif-ray evaluate runs/evidence && iif-ray report runs/evidence

The official IIF pipeline runs each round as a new process (fresh, re-seeded episodes, none
carried over) while its PPO baseline samples continuously, and its models use SB3's
output-layer init (orthogonal, gain 0.01 for the policy, 1 for the value). The continuous,
RLlib-init cell is the evidence grid's own ``ppo``/``iif`` rows (same seeds, same output
directory); this sweep adds the other three cells, labelled ``<algo>-restart``,
``<algo>-sb3init`` and ``<algo>-restart-sb3init``. The report compares each ``iif-*`` with
the ``ppo-*`` of its own cell, and each ``ppo-*`` with plain ``ppo``.
"""

from __future__ import annotations

from dataclasses import replace

from iif_ray.experiments.options import SweepOptions
from iif_ray.experiments.sweeps import benchmark_tuner
from tune_experiments.head_init import SB3_HEAD_GAINS

CELLS = {  # label suffix -> (restart per round, SB3 output-layer init)
    "-restart": (True, False),
    "-sb3init": (False, True),
    "-restart-sb3init": (True, True),
}


def cell_options(opts: SweepOptions, suffix: str) -> SweepOptions:
    restart, sb3_init = CELLS[suffix]
    return replace(opts, snapshots=True, eval_episodes=0, restart_per_round=restart,
                   model_overrides={"head_output_gains": SB3_HEAD_GAINS} if sb3_init else {},
                   label_suffix=suffix)


def tuners(opts: SweepOptions):
    if opts.algos == ["ppo", "iif", "random"]:
        opts = replace(opts, algos=["ppo", "iif"])
    for env in opts.envs or ["lunarlander"]:
        for suffix in CELLS:
            yield env, benchmark_tuner(env, cell_options(opts, suffix),
                                       name=f"protocol{suffix}-{env}")
