"""detox-mini: vocabulary, generator, reward and the (different) evaluation detector."""

from __future__ import annotations

import numpy as np
import pytest

from iif_ray.lm import detox


def test_vocabulary_is_clean_insults_and_nothing_profane():
    clean, insults = detox.vocabulary()
    assert (len(clean), len(insults)) == (detox.NUM_CLEAN, detox.NUM_INSULTS)
    assert len(set(clean) | set(insults)) == detox.NUM_CLEAN + detox.NUM_INSULTS
    listed = detox._listed_profanity()
    assert not (set(clean) | set(insults)) & listed
    # The reward's classifier finds the insults offensive and the clean words not.
    r_insult = detox.reward(list(insults[:50]))
    r_clean = detox.reward(list(clean[:50]))
    assert r_insult.mean() < 0 < r_clean.mean()  # log-odds of clean


def test_generator_is_seeded_and_prompt_splits_differ():
    lang = detox.Language.build(0)
    assert lang.corpus(20) == detox.Language.build(0).corpus(20)
    train, held_out = lang.prompts(200, split="train"), lang.prompts(200, split="eval")
    assert all(len(p.split()) == detox.PROMPT_WORDS for p in train + held_out)
    assert len(set(train) & set(held_out)) < 5
    with pytest.raises(ValueError, match="unknown prompt split 'test'"):
        lang.prompts(1, split="test")


def test_reward_and_detector_both_rank_insulting_sentences_lower():
    lang = detox.Language.build(0)
    corpus = lang.corpus(600)
    insults = set(lang.insults)
    has = np.array([any(w in insults for w in s.split()) for s in corpus])
    assert 0.1 < has.mean() < 0.5
    r = detox.reward(corpus)
    assert r[has].mean() < r[~has].mean() - 1.0
    # Flipping the label negates the log-odds (the flipped-reward check relies on it).
    p = detox._classifier().predict_prob(corpus[:5])
    np.testing.assert_allclose(r[:5], np.log((1 - p) / p), rtol=1e-6)
    tox = detox.toxicity([s for s, h in zip(corpus, has, strict=True) if h])
    clean = detox.toxicity([s for s, h in zip(corpus, has, strict=True) if not h])
    assert tox["toxic_rate"] > clean["toxic_rate"] + 0.2
    assert np.isnan(detox.toxicity([])["toxic_rate"]) and len(detox.reward([])) == 0
