"""Harmful flips, AUROC and precision@k: the one definition the LM checks and report share."""

from __future__ import annotations

import math

import numpy as np
import pytest

from iif_ray.evaluation.flips import auroc, harmful_flips, precision_at_k


def test_harmful_flips_by_hand():
    """Harmful: corrupted, recorded advantage non-zero and of another sign than the clean."""
    corrupted = np.array([True, True, True, True, True, False, False])
    clean = np.array([1.0, -2.0, 0.0, 0.5, -0.5, 1.0, 0.0])
    recorded = np.array([-1.0, -3.0, 0.7, 0.0, 0.5, -1.0, 2.0])
    # 0: sign reversed; 1: same sign; 2: a zero made non-zero; 3: made zero (no gradient,
    # nothing to find); 4: reversed; 5, 6: not corrupted, never harmful.
    assert harmful_flips(corrupted, clean, recorded).tolist() == [
        True, False, True, False, True, False, False]


def test_precision_at_k_by_hand():
    positive = np.array([True, False, True, False])
    scores = np.array([-3.0, -2.0, 1.0, 0.0])  # lowest two: rows 0 and 1
    assert precision_at_k(positive, scores, 2) == 0.5
    assert precision_at_k(positive, scores, 4) == 0.5
    assert math.isnan(precision_at_k(positive, scores, 0))


def test_auroc_matches_scikit_learn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(4)
    for _ in range(20):
        y = rng.random(60) < 0.3
        s = rng.integers(0, 8, 60).astype(float)  # many ties
        assert auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert math.isnan(auroc(np.ones(5, bool), np.arange(5.0)))
