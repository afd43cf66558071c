"""The LM runtime end to end on Ray: one rollout actor, one reward actor, one learner."""

from __future__ import annotations

import pandas as pd
import pytest

from iif_ray.lm.learner import UpdateSettings
from iif_ray.lm.runtime import PROGRESS_CSV, LMRunSpec, fit


@pytest.mark.ray
@pytest.mark.parametrize(("algo", "estimator"), [("iif", "ppo"), ("random", "grpo")])
def test_two_rounds_end_to_end(ray_local, tiny_model_dir, tmp_path, algo, estimator):
    spec = LMRunSpec(model=str(tiny_model_dir), out_dir=str(tmp_path / algo), algo=algo,
                     rounds=2, prompts_per_round=8, group_size=2, validation_prompts=8,
                     eval_every=2, eval_prompts=8, lora_rank=2,
                     update=UpdateSettings(estimator=estimator, epochs=1, minibatch_size=4))
    summary = fit(spec, echo=lambda _: None)
    progress = pd.read_csv(tmp_path / algo / PROGRESS_CSV)
    assert progress["round"].tolist() == [1, 2]
    assert (progress.rows_updated % 4 == 0).all() and (progress.rows_updated <= 16).all()
    assert (progress.frac_dropped > 0).any()  # IIF and its control both drop rows
    assert (progress.scoring_s > 0).all() and (progress.update_s > 0).all()
    assert progress.eval_toxic_rate.notna().tolist() == [False, True]
    assert 0 <= progress.reward_mean.min() <= progress.reward_mean.max() <= 1
    assert len(summary["rounds"]) == 2


def test_spec_refuses_bad_values():
    with pytest.raises(ValueError, match="unknown algo 'dpo'"):
        LMRunSpec(model="m", out_dir="o", algo="dpo")
    with pytest.raises(ValueError, match="grpo needs group_size >= 2"):
        LMRunSpec(model="m", out_dir="o", group_size=1, update=UpdateSettings(estimator="grpo"))
    with pytest.raises(ValueError, match=r"drop_fraction must be in \[0, 1\)"):
        LMRunSpec(model="m", out_dir="o", drop_fraction=1.0)


@pytest.mark.ray
def test_train_lm_command_with_a_local_model(ray_local, tiny_model_dir, classifier_dir,
                                            tmp_path):
    """``iif-ray train-lm --model PATH --reward PATH``: the user-facing path, on a policy and a
    reward classifier written with ``save_pretrained`` (nothing downloads)."""
    import json

    from iif_ray.cli import main

    out = tmp_path / "run"
    assert main(["train-lm", "--model", str(tiny_model_dir), "--rounds", "1",
                 "--prompts-per-round", "4", "--group-size", "2", "--minibatch-size", "4",
                 "--epochs", "1", "--lora-rank", "2", "--out", str(out),
                 "--reward", str(classifier_dir[0]), "--reward-label", "nothate",
                 "--address", ray_local.get_runtime_context().gcs_address]) == 0
    progress = pd.read_csv(out / PROGRESS_CSV)
    assert progress["round"].tolist() == [1] and progress.rows_updated.item() in (4, 8)
    summary = json.loads((out / "lm_summary.json").read_text())
    assert summary["spec"]["model"] == str(tiny_model_dir) and summary["spec"]["algo"] == "iif"
    assert summary["spec"]["reward"] == str(classifier_dir[0])
    # The tiny classifier is untrained: rewards near 0.5, not detox-mini's (about 0.98).
    assert 0.2 < progress.reward_mean.item() < 0.8
