"""detox-mini with the paper's RLHF recipe (``train-lm --preset paper-rlhf``) as a Tune grid.

    iif-ray sweep detox_mini_paper --seeds 5 --out runs/lm-paper      # rerun to resume
    iif-ray report runs/lm-paper

The default arms are {ppo, iif, random}: IIF keeps the records of score > 0 (the paper's
code), the random control drops as many at random. Minibatch 1, 4 epochs and 1,024
validation responses make a round several times dearer than detox_mini's on CPU; lower
``--budget-scale`` to run fewer rounds.
"""

from __future__ import annotations

from pathlib import Path

from iif_ray.experiments.lm_trials import LM_ENV, lm_tuner
from iif_ray.experiments.options import SweepOptions
from iif_ray.lm.spec import LMRunSpec, preset_fields

ROUNDS = 100


def tuners(opts: SweepOptions):
    from iif_ray.lm.generation import SamplingSettings
    from iif_ray.lm.learner import UpdateSettings
    from iif_ray.lm.pretrain import detox_model

    out = Path(opts.out).resolve()
    model = detox_model(out / "lm-models")
    fields = preset_fields("paper-rlhf", "iif")
    update = UpdateSettings(**fields.pop("update"))
    spec = LMRunSpec(model=str(model), out_dir=str(out / "lm"), **fields, update=update,
                     sampling=SamplingSettings(),
                     rounds=max(1, round(ROUNDS * opts.budget_scale)),
                     checkpoint_every=opts.checkpoint_every, rollout_cpus=0.5)
    yield LM_ENV, lm_tuner(spec, opts)
