"""arith with 30% of rewards flipped, as a Tune grid: algos x seed, GRPO over groups of 8.

    iif-ray sweep arith_noisy --seeds 5 --max-concurrent 1 --out runs/arith-noise30
    iif-ray report runs/arith-noise30

Every trial is one LM run (``iif_ray.experiments.lm_trials``) of ``train-lm --task arith
--reward-noise 0.3`` with the task's defaults (``iif_ray.lm.spec.TASK_DEFAULTS``): 32
problems x 8 answers a round, evaluation = greedy exact accuracy on the 500 held-out problems
(the round rows' ``eval_return``, ``progress.csv``'s ``eval_reward``) every 5 rounds. The
algorithm "ppo" is the unfiltered GRPO update (the estimator is GRPO; "ppo" names the absence
of a filter). Each run's ledger marks the corrupted records, so the flipped-reward AUROC of
IIF's scores can be read from it.

A trial reserves 2 CPUs (driver 0.5, rollout 0.5, learner 1): one trial at a time on a
2-core machine, about 2.5 s per round there (IIF, quiet machine; 256 sequences).

Measured before this grid was run (seed 0, clean rewards, from the pre-trained model's 43.8%):
GRPO did not move the greedy held-out accuracy within 60 rounds (0.37-0.44 at lr 5e-4,
with LoRA on q/v or on every linear layer; 0.38-0.44 in 16 rounds at lr 1e-3), while the
per-token KL grew to about 0.2; what the grid can show at 30% noise is whether a filter
keeps the corrupted records from pulling the policy away.
"""

from __future__ import annotations

from pathlib import Path

from iif_ray.experiments.lm_trials import lm_tuner
from iif_ray.experiments.options import SweepOptions
from iif_ray.lm.spec import task_spec

ROUNDS = 80
NOISE = 0.3


def tuners(opts: SweepOptions):
    from iif_ray.lm.pretrain import arith_model

    out = Path(opts.out).resolve()
    model = arith_model(out / "lm-models")
    spec = task_spec("arith", str(model), str(out / "lm"), reward_noise=NOISE,
                     rounds=max(1, round(ROUNDS * opts.budget_scale)),
                     checkpoint_every=opts.checkpoint_every, rollout_cpus=0.5)
    name = f"arith-noise{round(100 * NOISE)}"
    yield name, lm_tuner(spec, opts, name=name)
