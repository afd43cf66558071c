"""LM runs as Tune trials: a real two-trial grid, exported to rounds.csv and reported."""

from __future__ import annotations

import pandas as pd
import pytest

from iif_ray.experiments.lm_trials import LM_ENV, lm_tuner
from iif_ray.experiments.options import SweepOptions
from iif_ray.experiments.sweeps import fit_and_export
from iif_ray.lm.learner import UpdateSettings
from iif_ray.lm.spec import LMRunSpec
from iif_ray.run import PROGRESS


@pytest.mark.ray
@pytest.mark.slow
def test_lm_grid_exports_round_records_and_reports(ray_local, tiny_model_dir, tmp_path,
                                                   monkeypatch):
    from iif_ray.cli import main

    monkeypatch.delenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", raising=False)
    out = tmp_path / "sweep"
    spec = LMRunSpec(model=str(tiny_model_dir), out_dir=str(out / "lm"), rounds=2,
                     prompts_per_round=4, group_size=2, validation_prompts=4, eval_every=2,
                     eval_prompts=4, lora_rank=2, checkpoint_every=1, rollout_cpus=0.5,
                     update=UpdateSettings(epochs=1, minibatch_size=4))
    opts = SweepOptions(algos=["ppo", "iif"], seeds=1, out=str(out))
    path = fit_and_export([(LM_ENV, lm_tuner(spec, opts))], out)
    rounds = pd.read_csv(path)
    assert sorted(rounds.algo.unique()) == ["iif", "ppo"]
    assert rounds.groupby("algo")["round"].apply(list).tolist() == [[1, 2], [1, 2]]
    assert rounds.env_steps.tolist() == [8, 16, 8, 16]
    assert rounds.eval_return.isna().tolist() == [True, False, True, False]
    iif = rounds[rounds.algo == "iif"]
    assert (iif.frac_dropped > 0).all() and (iif.scoring_s > 0).all()
    # Each trial's own run directory holds its LM progress, the same rewards as reported.
    progress = pd.read_csv(out / "lm" / "iif-seed0" / PROGRESS)
    assert progress.reward_mean.tolist() == pytest.approx(iif.train_return.tolist())
    assert main(["report", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert f"## {LM_ENV}\n" in text and f"## {LM_ENV}: held-out evaluation" in text
    assert (out / f"curves_{LM_ENV}_heldout.png").stat().st_size > 0
    assert sorted(p.name.rsplit("-", 1)[0] for p in (out / "tune").glob("*/*-seed0-*")) == \
        ["iif-seed0", "ppo-seed0"]
