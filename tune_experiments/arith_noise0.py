"""arith with 0% of rewards flipped: the grid of :mod:`tune_experiments.arith_noisy`
at another noise level (its own ``--out``: run directories are named by algorithm and seed).

    iif-ray sweep arith_noise0 --algos ppo,group-filter,iif,group-filter+iif,random \\
        --seeds 3 --max-concurrent 2 --out runs/arith-noise0
"""

from __future__ import annotations

from iif_ray.experiments.options import SweepOptions
from tune_experiments.arith_noisy import arith_tuner

NOISE = 0.0


def tuners(opts: SweepOptions):
    yield arith_tuner(opts, NOISE)
