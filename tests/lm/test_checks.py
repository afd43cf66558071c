"""The flipped-reward and single-round intervention checks, on a tiny local model."""

from __future__ import annotations

import math

from iif_ray.lm.checks import run_checks
from iif_ray.lm.learner import UpdateSettings


def test_checks_report_auroc_and_three_paired_arms(tiny_model_dir, monkeypatch):
    import iif_ray.lm.checks as checks

    monkeypatch.setattr(checks, "UpdateSettings",
                        lambda: UpdateSettings(epochs=1, minibatch_size=4))
    lines: list[str] = []
    out = run_checks(str(tiny_model_dir), seeds=1, echo=lines.append, sequences=20,
                     validation=12)
    flip = out["flip"][0]
    assert 0 <= flip["auroc"] <= 1 and 0 <= flip["flipped_negative"] <= 1
    arms = out["intervention"][0]
    assert set(arms) == {"all", "drop-negative", "drop-random"}
    assert arms["all"]["kept"] == 20
    # The random arm drops exactly as many records as the negative-score arm.
    assert arms["drop-negative"]["kept"] == arms["drop-random"]["kept"] <= 20
    # Rewards are log-odds (any real number); the detector's toxic rate is a fraction.
    assert all(math.isfinite(a["reward"]) and 0 <= a["toxic_rate"] <= 1 for a in arms.values())
    assert "flipped-reward AUROC" in lines[0] and "held-out reward" in lines[1]
