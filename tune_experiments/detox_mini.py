"""detox-mini as a Tune grid: {ppo, iif, random} x seed, 100 rounds of 256 sequences each.

    iif-ray sweep detox_mini --seeds 5 --out runs/lm-sweep       # rerun to resume
    iif-ray report runs/lm-sweep

Every trial is one LM run (``iif_ray.experiments.lm_trials``) with its own run directory under
``<out>/lm/``; it reports round rows like the classic trials, so ``rounds.csv`` and the
report (IQM, P(IIF > PPO), SE_ave / SE_peak) read it the same way. The evaluation return is
the held-out reward (log-odds of "not offensive" on held-out prompt topics, every 5 rounds);
``progress.csv`` in each run directory also has the held-out detector's toxic rate.

A trial reserves 2 CPUs (driver 0.5, rollout 0.5, learner 1): one trial at a time on a 2-core
machine, about 7 s per round there.
"""

from __future__ import annotations

from pathlib import Path

from iif_ray.experiments.lm_trials import LM_ENV, lm_tuner
from iif_ray.experiments.options import SweepOptions
from iif_ray.lm.spec import LMRunSpec

ROUNDS = 100


def tuners(opts: SweepOptions):
    from iif_ray.lm.pretrain import detox_model

    out = Path(opts.out).resolve()
    model = detox_model(out / "lm-models")
    spec = LMRunSpec(model=str(model), out_dir=str(out / "lm"),
                     rounds=max(1, round(ROUNDS * opts.budget_scale)),
                     checkpoint_every=opts.checkpoint_every, rollout_cpus=0.5)
    yield LM_ENV, lm_tuner(spec, opts)
