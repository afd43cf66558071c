"""Selection rules: exact drop counts and the edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from iif_ray.attribution import NonFiniteScoresError, select
from iif_ray.attribution.selection import SELECTION_RULES

RNG = np.random.default_rng(0)


def scores_with(n_neg: int, n_pos: int) -> np.ndarray:
    s = np.concatenate([-RNG.uniform(0.1, 2, n_neg), RNG.uniform(0.1, 2, n_pos)])
    return RNG.permutation(s)


def test_neg_bottom_drops_floor_p_negatives_lowest_first() -> None:
    s = scores_with(37, 63)
    sel = select(s, "neg-bottom", 0.5)
    assert sel.num_dropped == math.floor(0.5 * 37) == (~sel.keep).sum()
    assert s[~sel.keep].max() < s[sel.keep].min()
    assert sel.num_negative == 37


def test_bottom_and_negative_counts() -> None:
    s = scores_with(10, 30)
    assert (~select(s, "bottom", 0.25).keep).sum() == 10
    neg = select(s, "negative", 0.0)
    assert (~neg.keep).sum() == 10 and (s[~neg.keep] < 0).all() and (s[neg.keep] >= 0).all()


def test_controls_drop_the_same_count_as_neg_bottom() -> None:
    s = scores_with(40, 60)
    adv = RNG.normal(size=100)
    want = select(s, "neg-bottom", 0.25).num_dropped
    rnd = select(s, "random", 0.25, rng=np.random.default_rng(1))
    by_adv = select(s, "advantage", 0.25, advantages=adv)
    assert rnd.num_dropped == by_adv.num_dropped == want == 10
    # The advantage control drops the smallest |A|.
    assert np.abs(adv[~by_adv.keep]).max() <= np.abs(adv[by_adv.keep]).min()
    # Random is reproducible from the seed and differs across seeds.
    again = select(s, "random", 0.25, rng=np.random.default_rng(1))
    other = select(s, "random", 0.25, rng=np.random.default_rng(2))
    assert (rnd.keep == again.keep).all() and (rnd.keep != other.keep).any()


def test_neg_random_drops_as_many_as_negative_at_random() -> None:
    """The random control of the paper's RLHF rule: every negative score's count, any rows."""
    s = scores_with(40, 60)
    sel = select(s, "neg-random", 0.0, rng=np.random.default_rng(3))
    assert sel.num_dropped == (~sel.keep).sum() == 40
    assert (s[~sel.keep] >= 0).any() and (s[sel.keep] < 0).any()
    with pytest.raises(ValueError, match="'neg-random' needs an rng"):
        select(s, "neg-random", 0.0)


def test_no_negative_scores_drops_nothing() -> None:
    s = scores_with(0, 50)
    for rule in ("neg-bottom", "negative", "random", "advantage", "neg-random"):
        sel = select(s, rule, 0.5, rng=np.random.default_rng(0), advantages=s)
        assert sel.keep.all(), rule
    assert (~select(s, "bottom", 0.5).keep).sum() == 25  # bottom ignores the sign


def test_all_negative() -> None:
    s = scores_with(20, 0)
    assert select(s, "neg-bottom", 0.5).num_dropped == 10
    sel = select(s, "negative", 0.0)
    # Dropping everything would leave nothing to train on: the best record stays.
    assert sel.keep.sum() == 1 and sel.clamped and s[sel.keep][0] == s.max()


def test_ties_give_exact_counts_and_stable_order() -> None:
    s = np.array([-1.0, -1.0, -1.0, -1.0, 2.0, 2.0])
    sel = select(s, "neg-bottom", 0.5)
    assert sel.num_dropped == 2
    assert list(np.flatnonzero(~sel.keep)) == [0, 1]  # earliest records first among ties
    zeros = np.zeros(8)
    assert select(zeros, "neg-bottom", 0.9).keep.all()  # zero is not negative
    assert (~select(zeros, "bottom", 0.5).keep).sum() == 4


def test_p_zero_drops_nothing() -> None:
    s = scores_with(30, 30)
    for rule in ("neg-bottom", "bottom", "random", "advantage"):
        assert select(s, rule, 0.0, rng=np.random.default_rng(0), advantages=s).keep.all()


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), "half", None])
def test_invalid_p_is_a_clear_error(bad) -> None:
    with pytest.raises(ValueError, match=r"drop_fraction.*\[0, 1\)") as err:
        select(np.zeros(4), "neg-bottom", bad)
    assert repr(bad) in str(err.value)


def test_unknown_rule() -> None:
    with pytest.raises(ValueError, match="unknown selection rule 'worst'"):
        select(np.zeros(4), "worst", 0.1)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_scores_name_the_round(bad: float) -> None:
    s = np.array([0.1, -0.2, bad, 0.3])
    with pytest.raises(NonFiniteScoresError, match=r"round 17: 1 of 4 .*record 2"):
        select(s, "neg-bottom", 0.5, round_index=17)


def test_batch_never_becomes_empty() -> None:
    # A single negative record with 'negative' would leave an empty batch.
    sel = select(np.array([-3.0]), "negative", 0.0)
    assert sel.keep.sum() == 1 and sel.clamped
    # min_keep larger than 1 keeps the highest scores.
    s = np.array([-5.0, -4.0, -3.0, -2.0, -1.0])
    sel = select(s, "negative", 0.0, min_keep=3)
    assert list(np.flatnonzero(sel.keep)) == [2, 3, 4]
    for rule in SELECTION_RULES:
        sel = select(np.array([-1.0]), rule, 0.99, rng=np.random.default_rng(0),
                     advantages=np.ones(1))
        assert sel.keep.sum() == 1
