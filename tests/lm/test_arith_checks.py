"""The flipped-reward and intervention checks on arith, on a tiny untrained model: exact
rewards, 1 <-> 0 flips judged by GRPO's group-relative advantage, and an exact held-out
measure (the probability of the exact answer, recomputed here token by token)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from iif_ray.lm import arith
from iif_ray.lm.checks import (
    flip_rewards,
    flipped_reward_auroc,
    intervention,
    intervention_arms,
    prepare_round,
    run_checks,
)
from iif_ray.lm.generation import forced_records, response_texts

SEQUENCES, GROUP = 16, 4
UPDATE = {"minibatch_size": 1, "epochs": 1}  # whole arms (no trimming), a fast update
# Which of the 16 records answer right: a group all right, one with 1 of 4, one with 3 of
# 4, one all wrong (GRPO's advantages: zero, mixed, mixed, zero).
RIGHT = np.array([1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0], dtype=bool)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One torch thread: these sizes are far slower split over a busy machine's cores."""
    from iif_ray.lm.pretrain import one_thread

    with one_thread():
        yield


def planted_responses(prompts: list[str], right: np.ndarray) -> list[str]:
    """The right answer where ``right``, else a wrong one: off by one, or the right digits
    with a padding token inside (wrong for the checker, which sees special tokens)."""
    out = []
    for i, (p, ok) in enumerate(zip(prompts, right, strict=True)):
        a, b = arith.parse(p)
        digits = str(a + b)
        wrong = (f"{digits[0]}<pad>{digits[1:]}<eos>" if i % 2 else f"{a + b + 1}<eos>")
        out.append(arith.answer(p) if ok else wrong)
    return out


def _prompt_texts(tokenizer, batch) -> list[str]:
    prompt = batch.attention_mask.bool() & ~batch.response_mask.bool()
    return [tokenizer.decode(ids[m].tolist(), skip_special_tokens=True)
            for ids, m in zip(batch.input_ids, prompt, strict=True)]


@pytest.fixture(scope="module")
def sampled_round(arith_model_dir):
    return prepare_round(str(arith_model_dir), 0, sequences=SEQUENCES, validation=8,
                         task="arith", group_size=GROUP, update=UPDATE)


@pytest.fixture(scope="module")
def planted_round(arith_model_dir):
    """A round whose responses are planted (the forced records of known answers) instead
    of sampled, so its rewards and advantages vary as a trained model's would."""
    import iif_ray.lm.checks as checks

    def planted(model, tokenizer, prompts, settings, seed, greedy=False):
        right = RIGHT if len(prompts) == SEQUENCES else np.arange(len(prompts)) % 2 == 0
        return forced_records(tokenizer, prompts, planted_responses(list(prompts), right))

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(checks, "sample_records", planted)
        return prepare_round(str(arith_model_dir), 0, sequences=SEQUENCES, validation=8,
                             task="arith", group_size=GROUP, update=UPDATE)


def test_the_round_is_grpo_over_problem_groups_with_the_checkers_rewards(sampled_round):
    r = sampled_round
    assert r.spec.task == "arith" and r.spec.update.estimator == "grpo"
    assert (r.spec.update.lr, r.spec.update.epochs) == (3e-4, 1)  # the task's lr, UPDATE's
    assert r.spec.group_size == GROUP and len(r.prompts) == SEQUENCES
    assert all(len(set(r.prompts[i:i + GROUP])) == 1 for i in range(0, SEQUENCES, GROUP))
    assert len(set(r.prompts)) == SEQUENCES // GROUP
    assert _prompt_texts(r.tokenizer, r.batch) == r.prompts
    texts = response_texts(r.tokenizer, r.batch, skip_special_tokens=False)
    np.testing.assert_array_equal(r.rewards.numpy(), arith.reward(r.prompts, texts))
    vprompts = _prompt_texts(r.tokenizer, r.validation)
    assert len(vprompts) == 8 and not set(vprompts) & set(r.prompts)
    vtexts = response_texts(r.tokenizer, r.validation, skip_special_tokens=False)
    np.testing.assert_array_equal(r.validation_rewards.numpy(), arith.reward(vprompts, vtexts))


def test_planted_answers_are_rewarded_exactly(planted_round):
    """Right answers score 1; a padding token inside the right digits scores 0."""
    np.testing.assert_array_equal(planted_round.rewards.numpy(), RIGHT.astype(np.float32))
    np.testing.assert_array_equal(planted_round.validation_rewards.numpy(), [1, 0] * 4)


def _grpo(rewards: np.ndarray) -> np.ndarray:
    g = rewards.reshape(-1, GROUP)
    return ((g - g.mean(1, keepdims=True)) / (g.std(1, ddof=1, keepdims=True) + 1e-6)).ravel()


def test_flips_are_one_zero_and_harmful_where_the_group_advantage_changes_sign(
        planted_round):
    r = planted_round
    true = r.rewards.numpy().astype(np.float64)
    flips = flip_rewards(r, seed=0)
    assert flips.flipped.sum() == round(0.1 * SEQUENCES)
    np.testing.assert_array_equal(flips.rewards.numpy(), np.where(flips.flipped, 1 - true, true))
    harmless_seen = False
    for seed in range(40):  # half the records flipped: whole groups now and then
        flips = flip_rewards(r, fraction=0.5, seed=seed)
        assert flips.flipped.sum() == SEQUENCES // 2
        corrupted = np.where(flips.flipped, 1 - true, true)
        recorded = np.sign(_grpo(corrupted))
        expected = flips.flipped & (recorded != 0) & (np.sign(_grpo(true)) != recorded)
        np.testing.assert_array_equal(flips.harmful, expected)
        harmless_seen |= bool((flips.flipped & ~expected).any())
    # A 0/1 flip is harmless where it leaves the record's advantage zero (a group flipped
    # whole, or one made uniform) or of its sign.
    assert harmless_seen
    out = flipped_reward_auroc(r, seed=0)
    assert out["flips"] == 2 and out["clean_flips"] == flip_rewards(r, seed=0).harmful.sum()
    assert 0 <= out["auroc"] <= 1


def _answer_probability(model, tokenizer, prompt: str) -> float:
    """The exact answer's probability, one token at a time on the unpadded prompt."""
    ids = [tokenizer.bos_token_id, *tokenizer(prompt, add_special_tokens=False)["input_ids"]]
    p = 1.0
    with torch.no_grad():
        for token in tokenizer(arith.answer(prompt), add_special_tokens=False)["input_ids"]:
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
            p *= float(torch.softmax(logits.double(), -1)[token])
            ids.append(token)
    return p


def test_the_arms_and_their_held_out_probability_recomputed(planted_round):
    r = planted_round
    full, targets, arms = intervention_arms(r, seed=0)
    scores = r.learner.scores(full, r.validation, r.weights, "ghost")
    assert torch.equal(arms["all"], torch.arange(SEQUENCES))
    assert torch.equal(arms["drop-negative"], torch.nonzero(scores >= 0).ravel())
    assert len(arms["drop-random"]) == len(arms["drop-negative"])
    out = intervention(r, seed=0, eval_prompts=3)
    assert {a: x["kept"] for a, x in out.items()} == {a: len(k) for a, k in arms.items()}
    prompts = arith.Problems().prompts(3, split="eval")
    for arm in ("all", "drop-negative"):
        learner = copy.deepcopy(r.learner)
        learner.update(full, arms[arm], targets)
        model = learner.policy.model
        expected = np.mean([_answer_probability(model, r.tokenizer, p) for p in prompts])
        assert out[arm]["reward"] == pytest.approx(expected, rel=1e-4)
        assert 0 <= out[arm]["greedy"] <= 1
    assert out["all"]["reward"] != out["drop-negative"]["reward"]  # the update differs


def test_run_checks_on_arith(arith_model_dir):
    lines: list[str] = []
    out = run_checks(str(arith_model_dir), seeds=1, echo=lines.append, sequences=SEQUENCES,
                     validation=(8, 4), task="arith", group_size=GROUP, update=UPDATE)
    assert out["flip"][0]["flips"] == 2
    assert set(out["intervention"][0]) == {"4", "8"}
    for arms in out["intervention"][0].values():
        assert arms["all"]["kept"] == SEQUENCES
        assert arms["drop-negative"]["kept"] == arms["drop-random"]["kept"]
        assert all(0 <= a["reward"] <= 1 and 0 <= a["greedy"] <= 1 for a in arms.values())
    assert "flipped-reward AUROC" in lines[0]
    assert "V=4: held-out exact-answer probability" in lines[1] and "V=8" in lines[2]
