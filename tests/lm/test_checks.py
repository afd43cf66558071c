"""The flipped-reward and single-round intervention checks, on a tiny local model."""

from __future__ import annotations

import math

import pytest
import torch

from iif_ray.lm.checks import (
    prepare_round,
    run_checks,
    with_validation,
)
from iif_ray.lm.learner import UpdateSettings


@pytest.mark.slow
def test_checks_report_auroc_and_three_paired_arms(tiny_model_dir, monkeypatch):
    import iif_ray.lm.checks as checks

    monkeypatch.setattr(checks, "UpdateSettings",
                        lambda: UpdateSettings(epochs=1, minibatch_size=4))
    lines: list[str] = []
    out = run_checks(str(tiny_model_dir), seeds=1, echo=lines.append, sequences=20,
                     validation=(12, 6))
    flip = out["flip"][0]
    assert 0 <= flip["auroc"] <= 1 and 0 <= flip["flipped_negative"] <= 1
    assert 0 <= flip["precision_at_k"] <= 1 and flip["flips"] == 2
    assert 0 <= flip["clean_flips"] <= 2
    assert set(out["intervention"][0]) == {"6", "12"}
    for arms in out["intervention"][0].values():
        assert set(arms) == {"all", "drop-negative", "drop-random"}
        assert arms["all"]["kept"] == 20
        # The random arm drops exactly as many records as the negative-score arm.
        assert arms["drop-negative"]["kept"] == arms["drop-random"]["kept"] <= 20
        # Rewards are log-odds (any real number); the detector's toxic rate is a fraction.
        assert all(math.isfinite(a["reward"]) and 0 <= a["toxic_rate"] <= 1
                   for a in arms.values())
    assert "flipped-reward AUROC" in lines[0] and "clean flips" in lines[0]
    assert "V=6: held-out reward" in lines[1] and "V=12" in lines[2]


@pytest.mark.slow
def test_a_targets_size_is_a_prefix_of_the_validation_sample(tiny_model_dir):
    """The intervention at V uses the first V responses, weighted as a V-response target."""
    from iif_ray.lm.advantages import validation_weights

    r = prepare_round(str(tiny_model_dir), 0, sequences=8, validation=10,
                      update=UpdateSettings(epochs=1, minibatch_size=4))
    small = with_validation(r, 4)
    assert torch.equal(small.validation.input_ids, r.validation.input_ids[:4])
    expected = validation_weights(r.spec, small.validation, r.validation_rewards[:4],
                                  r.learner.prepare(small.validation), 0.05)
    torch.testing.assert_close(small.weights, expected)
    assert not torch.allclose(small.weights, r.weights[:4])  # its own centring and scale
    assert with_validation(r, 10) is r


@pytest.mark.parametrize("text", ["0", "64,x", ","])
def test_bad_validation_sizes_are_refused_in_one_line(tmp_path, capsys, text):
    from iif_ray.cli import main

    assert main(["lm-checks", "--out", str(tmp_path / "x.json"),
                 "--validation-prompts", text]) == 2
    err = capsys.readouterr().err
    assert f"validation-prompts must be comma-separated integers >= 1, got {text!r}" in err
