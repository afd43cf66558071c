"""arith with 30% of rewards flipped, as a Tune grid: algos x seed, GRPO over groups of 8.

    iif-ray sweep arith_noisy --algos ppo,group-filter,iif,group-filter+iif,random \
        --seeds 1 --first-seed K --max-concurrent 2 --out runs/arith-noise30  # K = 0 .. 4
    iif-ray report runs/arith-noise30

Every trial is one LM run (``iif_ray.experiments.lm_trials``) of ``train-lm --task arith
--reward-noise 0.3`` with the task's defaults (``iif_ray.lm.spec.TASK_DEFAULTS``): 32
problems x 8 answers a round, Adam 3e-4 for 2 epochs, IIF's target from 64 fresh
validation answers a round (rewarded without corruption), evaluation every 5 rounds on
the 500 held-out problems: the policy's mean probability of the exact answer
(``eval_reward``, the round rows' ``eval_return``) and greedy exact accuracy
(``eval_greedy``). "ppo" is the unfiltered GRPO update (the estimator is GRPO; "ppo" names
the absence of a filter). Each run's ledger marks the corrupted records, so the
flipped-reward AUROC of IIF's scores can be read from it.

Sized on seed 0 before the grid (lr 3e-4, 2 epochs): clean GRPO took held-out accuracy from
0.477 to 0.652 in 20 rounds and 0.662 in 25; at 30% noise 0.622 and 0.640, 0.664 at 45,
still rising slowly. 40 rounds is what 25 runs fit in one sitting on 2 cores; the curves
have not flattened by then, which the report states. A trial reserves 1 CPU (driver 0.5,
rollout and learner 0.25 each: they never compute at once), so two share a 2-core machine
and their seconds per round include that contention.
"""

from __future__ import annotations

from pathlib import Path

from iif_ray.experiments.lm_trials import lm_tuner
from iif_ray.experiments.options import SweepOptions
from iif_ray.lm.spec import task_spec

ROUNDS = 40
NOISE = 0.3


def tuners(opts: SweepOptions):
    yield arith_tuner(opts, NOISE)


def arith_tuner(opts: SweepOptions, noise: float):
    """``(name, tuner)`` of the arith grid at ``noise`` (the other noise levels' sweep
    files call it too; each level needs its own ``--out``, as run directories are named by
    algorithm and seed only)."""
    from iif_ray.lm.pretrain import arith_model

    out = Path(opts.out).resolve()
    model = arith_model(out / "lm-models")
    spec = task_spec("arith", str(model), str(out / "lm"), reward_noise=noise,
                     rounds=max(1, round(ROUNDS * opts.budget_scale)),
                     checkpoint_every=opts.checkpoint_every, rollout_cpus=0.25,
                     learner_cpus=0.25)
    name = f"arith-noise{round(100 * noise)}"
    return name, lm_tuner(spec, opts, name=name)
