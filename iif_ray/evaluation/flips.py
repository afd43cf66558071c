"""Corrupted rewards as ground truth for a filter: which flips harm, and how well scores
find them. One definition for the single-round check (:mod:`iif_ray.lm.checks`) and the
report's flip table over whole runs (:mod:`iif_ray.reporting.lm`).

A corrupted record is **harmful** when the update it gets under the corrupted reward goes
against the checker: its recorded advantage is non-zero and its sign differs from the
advantage the clean reward gives. That is a sign reversal (a right answer pushed down, a
wrong one pushed up) or a zero made non-zero (the clean update leaves the record alone; the
flip pushes it one way, always against the checker: a right answer that becomes 0 is pushed
down, a wrong one that becomes 1 up). A flip whose recorded advantage is zero is not harmful:
the record has no policy gradient, so no filter can find it and dropping it changes nothing.
"""

from __future__ import annotations

import math

import numpy as np


def harmful_flips(corrupted: np.ndarray, clean_advantage: np.ndarray,
                  recorded_advantage: np.ndarray) -> np.ndarray:
    """``[n]`` bool: the corrupted records whose recorded advantage is non-zero and of
    another sign than the clean one (see the module docstring)."""
    recorded = np.sign(np.asarray(recorded_advantage, dtype=float))
    clean = np.sign(np.asarray(clean_advantage, dtype=float))
    return np.asarray(corrupted, dtype=bool) & (recorded != 0) & (recorded != clean)


def auroc(positive: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for the ``positive`` rows (ties count half),
    from ranks: the Mann-Whitney statistic over (positives x negatives); NaN when either
    class is empty."""
    from scipy.stats import rankdata

    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        return math.nan
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def precision_at_k(positive: np.ndarray, scores: np.ndarray, k: int) -> float:
    """The share of positives among the ``k`` lowest scores (ties: record order)."""
    if k < 1:
        return math.nan
    return float(np.asarray(positive)[np.argsort(scores, kind="stable")[:k]].mean())
