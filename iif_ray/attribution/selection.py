"""Selection rules: which records to drop given their influence scores.

Every rule drops a well-defined count, so controls can be compared honestly:

* ``neg-bottom`` (paper default): the ``floor(p * #negative)`` lowest scores.
* ``bottom``: the ``floor(p * n)`` lowest scores.
* ``negative``: every record with a negative score (``p`` is not used).
* ``random``: as many records as ``neg-bottom`` would drop, uniformly at random.
* ``neg-random``: as many records as ``negative`` would drop (every negative score),
  uniformly at random: the random control of the ``negative`` rule (the paper's RLHF code
  calls it so).
* ``advantage``: as many as ``neg-bottom`` would drop, those with the smallest ``|Ahat|``
  (the records an advantage heuristic would call least informative).

Ties are broken by record order (stable sort), so the count is exact. A rule never empties
the batch: at least ``min_keep`` records (the highest-scoring) stay, and the result says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SELECTION_RULES = ("neg-bottom", "bottom", "negative", "random", "advantage", "neg-random")


class NonFiniteScoresError(ValueError):
    """Raised when scores contain NaN or inf: training on them would be silent garbage."""


@dataclass(frozen=True)
class Selection:
    keep: np.ndarray  # bool [n]
    num_dropped: int
    num_negative: int
    clamped: bool  # the rule wanted to drop so much that min_keep stepped in


def check_drop_fraction(p: float) -> float:
    """Validate ``p`` in [0, 1); the error names the bad value and the accepted range."""
    try:
        value = float(p)
    except (TypeError, ValueError):
        raise ValueError(f"drop_fraction must be a number in [0, 1), got {p!r}") from None
    if not (0.0 <= value < 1.0):
        raise ValueError(f"drop_fraction must be in [0, 1), got {p!r}")
    return value


def check_rule(rule: str) -> str:
    if rule not in SELECTION_RULES:
        raise ValueError(f"unknown selection rule {rule!r}; accepted: {list(SELECTION_RULES)}")
    return rule


def check_scores(scores: np.ndarray, round_index: int | None = None) -> None:
    bad = ~np.isfinite(scores)
    if bad.any():
        where = f"round {round_index}: " if round_index is not None else ""
        first = int(np.flatnonzero(bad)[0])
        raise NonFiniteScoresError(
            f"{where}{int(bad.sum())} of {len(scores)} influence scores are not finite "
            f"(first at record {first}: {scores[first]}); refusing to filter on them"
        )


def drop_count(rule: str, scores: np.ndarray, p: float) -> int:
    """How many records ``rule`` drops for these scores."""
    n_neg = int((scores < 0).sum())
    if rule == "bottom":
        return math.floor(p * len(scores))
    if rule in ("negative", "neg-random"):
        return n_neg
    return math.floor(p * n_neg)  # neg-bottom, and the controls that copy its count


def select(
    scores: np.ndarray,
    rule: str = "neg-bottom",
    drop_fraction: float = 0.0,
    *,
    advantages: np.ndarray | None = None,
    rng: np.random.Generator | None = None,
    round_index: int | None = None,
    min_keep: int = 1,
) -> Selection:
    """Apply a selection rule to one round's scores.

    Args:
        scores: the records' influence scores.
        rule: one of :data:`SELECTION_RULES` (``neg-bottom``: drop the
            ``floor(p * #negative)`` lowest; controls ``random``/``advantage`` drop as many).
        drop_fraction: ``p`` in [0, 1).
        advantages: the standardised advantages (the ``advantage`` control needs them).
        rng: the generator the ``random`` control draws from.
        round_index: the round, named in the error when scores are not finite.
        min_keep: never keep fewer records than this.

    Returns:
        The keep mask and counts, as a :class:`Selection`.

    Raises:
        ValueError: an unknown rule, ``p`` outside [0, 1), or a missing rng/advantages.
        NonFiniteScoresError: NaN or inf among the scores.
    """
    check_rule(rule)
    p = check_drop_fraction(drop_fraction)
    scores = np.asarray(scores, dtype=np.float64)
    check_scores(scores, round_index)
    n = len(scores)
    n_neg = int((scores < 0).sum())
    n_drop = drop_count(rule, scores, p)
    limit = max(n - max(min_keep, 0), 0)
    clamped = n_drop > limit
    n_drop = min(n_drop, limit)

    if rule in ("random", "neg-random"):
        if rng is None:
            raise ValueError(f"selection {rule!r} needs an rng for reproducible draws")
        order = rng.permutation(n)
    elif rule == "advantage":
        if advantages is None:
            raise ValueError("selection 'advantage' needs the standardised advantages")
        order = np.argsort(np.abs(np.asarray(advantages, dtype=np.float64)), kind="stable")
    else:
        order = np.argsort(scores, kind="stable")

    keep = np.ones(n, dtype=bool)
    keep[order[:n_drop]] = False
    return Selection(keep=keep, num_dropped=n_drop, num_negative=n_neg, clamped=clamped)
