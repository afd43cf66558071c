"""arith: problems and their fixed held-out split, the character tokenizer, the exact
checker, seeded reward corruption and deterministic pre-training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iif_ray.lm import arith
from iif_ray.lm.learner import UpdateSettings
from iif_ray.lm.spec import LMRunSpec
from iif_ray.lm.tasks import corrupt


def test_char_tokenizer_round_trips_and_survives_save_pretrained(tmp_path):
    from transformers import AutoTokenizer

    tok = arith.char_tokenizer()
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    for t in (tok, loaded):
        ids = t("371+48=", add_special_tokens=False)["input_ids"]
        assert t.convert_ids_to_tokens(ids) == list("371+48=")
        answer = t("419", add_special_tokens=False)["input_ids"] + [t.eos_token_id]
        assert t.decode(answer, skip_special_tokens=False) == "419<eos>"
        assert t.decode(answer, skip_special_tokens=True) == "419"
        assert len(t) == 4 + len(arith.CHARS)


def test_reward_is_one_only_for_the_exact_answer_then_eos():
    prompts = ["371+48="] * 6 + ["999+999=", "0+0="]
    responses = ["419<eos>", "419", "41<pad>9<eos>", "0419<eos>", "419<eos>7", "418<eos>",
                 "1998<eos>", "0<eos>"]
    np.testing.assert_array_equal(arith.reward(prompts, responses),
                                  [1, 0, 0, 0, 0, 0, 1, 1])
    assert arith.parse("7+12=") == (7, 12)
    with pytest.raises(ValueError, match="not an arith prompt: '7-12='"):
        arith.reward(["7-12="], ["0<eos>"])
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        arith.reward(["1+1=", "2+2="], ["2<eos>"])


def test_held_out_problems_are_fixed_and_never_drawn_for_training():
    problems = arith.Problems()
    held_out = problems.prompts(arith.HELD_OUT, split="eval")
    assert len(set(held_out)) == arith.HELD_OUT
    assert problems.prompts(10, split="eval", seed=5) == held_out[:10]  # whatever the seed
    assert arith.Problems().prompts(arith.HELD_OUT, split="eval") == held_out
    a, b = problems.train_pairs(300_000, seed=3)
    assert not problems.is_held_out(a, b).any()
    train = set(problems.prompts(20_000, split="train", seed=1))
    assert not train & set(held_out)
    # Rejection must be real: the held-out keys themselves are recognised.
    keys = problems.held_out
    assert problems.is_held_out(keys // 1000, keys % 1000).all()
    assert problems.prompts(50, split="train", seed=1) == problems.prompts(50, split="train",
                                                                             seed=1)
    assert problems.prompts(50, split="train", seed=1) != problems.prompts(50, split="train",
                                                                             seed=2)
    assert max(max(arith.parse(p)) for p in train) == arith.MAX_OPERAND
    with pytest.raises(ValueError, match="501 held-out prompts asked for; accepted: 1 to 500"):
        problems.prompts(501, split="eval")
    with pytest.raises(ValueError, match="unknown prompt split 'test'"):
        problems.prompts(1, split="test")


def test_corruption_flips_an_exact_seeded_share_per_round():
    flags = arith.corrupted_rows(256, 0.3, seed=4, round_index=7)
    assert flags.sum() == round(0.3 * 256)
    np.testing.assert_array_equal(flags, arith.corrupted_rows(256, 0.3, seed=4, round_index=7))
    assert (flags != arith.corrupted_rows(256, 0.3, seed=4, round_index=8)).any()
    assert (flags != arith.corrupted_rows(256, 0.3, seed=5, round_index=7)).any()
    assert not arith.corrupted_rows(256, 0.0, seed=4, round_index=7).any()
    rewards = np.array([1.0, 0.0, 1.0, 0.0])
    np.testing.assert_array_equal(arith.flip(rewards, np.array([True, True, False, False])),
                                  [0.0, 1.0, 1.0, 0.0])
    spec = LMRunSpec(model="m", out_dir="o", task="arith", reward_noise=0.25, seed=4,
                     group_size=2, prompts_per_round=8, eval_prompts=500,
                     update=UpdateSettings(estimator="grpo", minibatch_size=4))
    clean = torch.tensor([1.0, 0.0] * 8)
    seen, corrupted = corrupt(spec, 3, clean)
    assert corrupted.sum() == 4
    np.testing.assert_array_equal(corrupted, arith.corrupted_rows(16, 0.25, 4, 3))
    np.testing.assert_array_equal(seen.numpy(), np.where(corrupted, 1 - clean, clean))
    assert seen.dtype == clean.dtype


def test_arith_spec_checks_its_fields():
    with pytest.raises(ValueError, match=r"reward_noise 0\.1 needs task 'arith'"):
        LMRunSpec(model="m", out_dir="o", reward_noise=0.1)
    with pytest.raises(ValueError, match="takes no reward classifier or prompt file"):
        LMRunSpec(model="m", out_dir="o", task="arith", prompts="p.txt", eval_prompts=100)
    with pytest.raises(ValueError,
                       match=r"reward_noise must be a number in \[0, 0.5\], got 0.6"):
        LMRunSpec(model="m", out_dir="o", task="arith", reward_noise=0.6, eval_prompts=100)


def _tiny_settings(seed: int = 0):
    from iif_ray.lm.pretrain import ArithPretrainSettings

    return ArithPretrainSettings(steps=4, batch_size=8, problems=256, hidden=16, layers=1,
                                 seed=seed)


def test_pretraining_is_deterministic(tmp_path):
    """Same seed, same weights bit for bit (two pre-trainings, also on another thread count
    in the caller); another seed, other weights."""
    from iif_ray.lm.models import load_policy
    from iif_ray.lm.pretrain import pretrain_arith

    threads = torch.get_num_threads()
    pretrain_arith(tmp_path / "a", _tiny_settings(), echo=lambda _: None)
    torch.set_num_threads(2)
    try:
        pretrain_arith(tmp_path / "b", _tiny_settings(), echo=lambda _: None)
    finally:
        torch.set_num_threads(threads)
    pretrain_arith(tmp_path / "c", _tiny_settings(seed=1), echo=lambda _: None)
    a, b, c = (dict(load_policy(tmp_path / d)[0].named_parameters()) for d in "abc")
    assert a.keys() == b.keys() and len(a) > 5
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert torch.get_num_threads() == threads  # the caller's count comes back


def test_arith_model_is_pretrained_once_and_cached(tmp_path):
    from iif_ray.lm.pretrain import ARITH_MARKER, arith_model

    lines: list[str] = []
    path = arith_model(tmp_path, _tiny_settings(), echo=lines.append)
    assert (path / ARITH_MARKER).is_file() and lines
    lines.clear()
    assert arith_model(tmp_path, _tiny_settings(), echo=lines.append) == path
    assert lines == []  # the marker says the directory is complete: no second training
    (path / ARITH_MARKER).unlink()  # an interrupted pre-training is done again
    assert arith_model(tmp_path, _tiny_settings(), echo=lines.append) == path and lines


@pytest.mark.ray
@pytest.mark.slow
def test_two_arith_rounds_on_ray_write_corruption_and_accuracy(ray_local, arith_model_dir,
                                                              tmp_path):
    """GRPO with IIF through the real runtime at 25% noise: every round flips exactly a
    quarter of its records, the ledger says which (the reward there is the flipped one,
    the checker's on the rest), and the held-out accuracy is written as eval_reward."""
    import pandas as pd

    from iif_ray.ledger import SEQUENCE_LEDGER_SCHEMA, read_ledger
    from iif_ray.lm.trainer import fit
    from iif_ray.run import PROGRESS

    spec = LMRunSpec(model=str(arith_model_dir), out_dir=str(tmp_path), task="arith",
                     reward_noise=0.25, rounds=2, prompts_per_round=8, group_size=2,
                     validation_prompts=8, eval_every=2, eval_prompts=20, lora_rank=2,
                     update=UpdateSettings(estimator="grpo", epochs=1, minibatch_size=4))
    lines: list[str] = []
    fit(spec, echo=lines.append)
    progress = pd.read_csv(tmp_path / PROGRESS)
    assert progress.eval_reward.notna().tolist() == [False, True]
    assert progress.eval_greedy.notna().tolist() == [False, True]
    assert 0 <= progress.eval_reward.iloc[1] <= 1
    assert progress.eval_toxic_rate.isna().all()  # detox's detector does not apply
    assert "held-out accuracy" in lines[-1]
    ledger = read_ledger(str(tmp_path / "ledger")).to_pandas()
    assert list(ledger.columns) == list(SEQUENCE_LEDGER_SCHEMA)
    assert ledger.groupby("iteration").corrupted.sum().tolist() == [4, 4]
    for k, rows in ledger.groupby("iteration"):
        np.testing.assert_array_equal(rows.corrupted, arith.corrupted_rows(16, 0.25, 0, k))
    clean = arith.reward(ledger.prompt.tolist(), ledger.response.tolist())
    np.testing.assert_array_equal(ledger.reward, arith.flip(clean, ledger.corrupted.to_numpy()))
    assert ledger.response_tokens.between(1, spec.sampling.max_new_tokens).all()
    assert ledger.score.notna().all()
    assert ledger.reward.mean() == pytest.approx(progress.reward_mean.mean(), rel=1e-5)


def test_train_lm_task_arith_takes_the_tasks_defaults_under_the_flags_given():
    from iif_ray.cli import build_parser
    from iif_ray.cli.train_lm import spec_from_flags

    parse = build_parser().parse_args
    spec = spec_from_flags(parse(["train-lm", "--out", "x", "--task", "arith"]), "m", "x")
    assert (spec.update.estimator, spec.group_size, spec.prompts_per_round, spec.eval_prompts,
            spec.sampling.max_new_tokens) == ("grpo", 8, 32, arith.HELD_OUT,
                                              arith.ANSWER_TOKENS)
    assert (spec.update.lr, spec.update.epochs) == (3e-4, 2)  # the task's update
    assert spec.update.clip == UpdateSettings().clip  # what the task leaves: the dataclasses'
    spec = spec_from_flags(parse(["train-lm", "--out", "x", "--task", "arith", "--group-size",
                                  "4", "--max-new-tokens", "9", "--estimator", "ppo"]),
                           "m", "x")
    assert (spec.group_size, spec.sampling.max_new_tokens, spec.update.estimator) == (4, 9,
                                                                                      "ppo")
    detox = spec_from_flags(parse(["train-lm", "--out", "x"]), "m", "x")
    assert detox == LMRunSpec(model="m", out_dir="x")


def _carry_free_oracle(a: int, b: int) -> int:
    """Column by column on the decimal strings, each column's digit sum mod 10, the top
    column's sum written whole."""
    x, y = str(a), str(b)
    width = max(len(x), len(y))
    x, y = x.zfill(width), y.zfill(width)
    columns = [int(p) + int(q) for p, q in zip(x, y, strict=True)]
    return int(str(columns[0]) + "".join(str(c % 10) for c in columns[1:]))


def test_carry_free_sum_writes_each_column_without_its_carry():
    rng = np.random.default_rng(3)
    pairs = [(58, 67), (999, 1), (5, 7), (0, 0), (950, 70), *rng.integers(0, 1000, (300, 2))]
    for a, b in pairs:
        assert arith.carry_free_sum(int(a), int(b)) == _carry_free_oracle(int(a), int(b))
    assert arith.carry_free_sum(58, 67) == 115 and arith.carry_free_sum(123, 456) == 579
    # Right exactly when no column but the top one carries.
    no_carry = [(a, b) for a, b in rng.integers(0, 1000, (300, 2))
                if all((a // 10**i) % 10 + (b // 10**i) % 10 < 10
                       for i in range(len(str(max(a, b))) - 1))]
    assert no_carry and all(arith.carry_free_sum(a, b) == a + b for a, b in no_carry)
    assert arith.habit_answer("58+67=") == "115<eos>"


def test_pretraining_writes_the_habit_share_of_answers_without_carrying():
    from dataclasses import replace

    from iif_ray.lm.pretrain import pretraining_answers

    prompts = arith.Problems().prompts(2000, split="train", seed=1)
    base = _tiny_settings()
    right = [arith.answer(p) for p in prompts]
    habit = [arith.habit_answer(p) for p in prompts]
    assert pretraining_answers(prompts, replace(base, habit=0.0)) == right
    assert pretraining_answers(prompts, replace(base, habit=1.0)) == habit
    half = pretraining_answers(prompts, replace(base, habit=0.5))
    slipped = [h == ans != r for h, ans, r in zip(habit, half, right, strict=True)]
    differ = sum(h != r for h, r in zip(habit, right, strict=True))
    assert all(ans in (r, h) for ans, r, h in zip(half, right, habit, strict=True))
    assert 0.45 < sum(slipped) / differ < 0.55  # 2,000 draws: SE 0.013
    assert half == pretraining_answers(prompts, replace(base, habit=0.5))  # seeded


def test_answer_probability_is_the_policy_probability_of_the_exact_answer(arith_model_dir):
    """Teacher-forced, batched and left-padded, against one prompt at a time with no
    padding, token by token through the model's own next-token distribution."""
    from iif_ray.lm.workers import RolloutWorker

    spec = LMRunSpec(model=str(arith_model_dir), out_dir="o", task="arith", eval_prompts=10)
    worker = RolloutWorker(spec)
    with torch.no_grad():  # adapters away from zero, so the LoRA path counts too
        for n, p in worker.model.named_parameters():
            if "lora_" in n:
                p.normal_(0, 0.3)
    prompts = ["5+7=", "371+48=", "999+999=", "12+0="]
    answers = [arith.answer(p) for p in prompts[:3]] + ["99<eos>"]  # one wrong answer too
    got = worker.answer_probability(prompts, answers)
    tok = worker.tokenizer
    for prompt, ans, p in zip(prompts, answers, got, strict=True):
        ids = [tok.bos_token_id, *tok(prompt, add_special_tokens=False)["input_ids"]]
        prob = 1.0
        for t in tok(ans, add_special_tokens=False)["input_ids"]:
            with torch.no_grad():
                logits = worker.model(input_ids=torch.tensor([ids])).logits[0, -1]
            prob *= torch.softmax(logits.double(), -1)[t].item()
            ids.append(t)
        assert p == pytest.approx(prob, rel=1e-4)
    assert got.min() > 0 and got.max() < 1
