"""The model, reward and prompt checks train-lm runs before Ray starts: they accept what the
actors load, and name what they would fail on (the refusals themselves are cases of
tests/cli/test_bad_input.py)."""

from __future__ import annotations

import shutil

import pytest

from iif_ray.lm.generation import SamplingSettings, sample_records
from iif_ray.lm.inputs import (
    InputError,
    check_policy_dir,
    check_prompts_fit,
    check_reward_dir,
    prompt_token_limit,
)
from iif_ray.lm.models import load_policy
from iif_ray.lm.prompts import PromptFile


def test_a_saved_model_and_classifier_are_accepted(tiny_model_dir, classifier_dir):
    model = check_policy_dir(tiny_model_dir)
    assert model.context == 128  # tiny_llama's max_positions
    assert model.tokenizer.pad_token == "<pad>"
    check_reward_dir(classifier_dir[0], "nothate")
    check_reward_dir(classifier_dir[0], None)  # label 0, as the reward then reads


def test_sharded_weights_are_accepted_whole_and_refused_with_a_shard_missing(tmp_path):
    from iif_ray.lm.models import tiny_llama, word_tokenizer

    tok = word_tokenizer(["good", "kind"])
    path = tmp_path / "sharded"
    tiny_llama(len(tok), hidden=16, intermediate=32, layers=2, heads=2).save_pretrained(
        path, max_shard_size="20KB")
    tok.save_pretrained(path)
    shards = sorted(path.glob("model-*.safetensors"))
    assert len(shards) > 1 and (path / "model.safetensors.index.json").is_file()
    check_policy_dir(path)
    shards[-1].write_bytes(shards[-1].read_bytes()[:-100])  # header whole, data short
    with pytest.raises(InputError, match=f"{shards[-1].name} is truncated"):
        check_policy_dir(path)
    shards[-1].unlink()
    with pytest.raises(InputError, match="names missing shard"):
        check_policy_dir(path)


def test_prompt_length_limit_is_the_context_less_bos_and_response(tiny_model_dir, tmp_path):
    model = check_policy_dir(tiny_model_dir)
    limit = prompt_token_limit(model.context, 12)
    assert limit == 128 - 1 - 12
    # The word-level tokenizer gives one token per word: an independent count.
    word = model.tokenizer.convert_ids_to_tokens(10)
    fits = tmp_path / "fits.txt"
    fits.write_text(f"{word}\n{word} {word}\n" + f"{word} " * limit + "\n")
    check_prompts_fit(PromptFile(fits), model, 12)
    over = tmp_path / "over.txt"
    over.write_text(f"{word}\n{word} {word}\n" + f"{word} " * (limit + 1) + "\n")
    with pytest.raises(InputError, match=f"1 prompt\\(s\\) longer than {limit} tokens "
                                         f"\\(the longest, {limit + 1} tokens"):
        check_prompts_fit(PromptFile(over), model, 12)


def test_generation_keeps_a_long_prompts_last_tokens_inside_the_context(tiny_model_dir):
    model, tok = load_policy(tiny_model_dir)
    first, last = tok.convert_ids_to_tokens([10, 11])
    settings = SamplingSettings(max_new_tokens=5)
    long = " ".join([first] * 200_000 + [last])
    batch = sample_records(model, tok, [long, first], settings, seed=0)
    assert batch.input_ids.shape[1] == 128  # 1 bos + 122 prompt tokens + 5 new
    prompt = batch.input_ids[0, :123].tolist()
    assert prompt[0] == tok.bos_token_id and prompt[-1] == 11  # the end of the prompt kept
    assert prompt[1:-1] == [10] * 121


def test_a_copy_of_a_model_missing_its_tokenizer_is_refused(tiny_model_dir, tmp_path):
    path = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, path)
    for f in path.glob("tokenizer*"):
        f.unlink()
    with pytest.raises(InputError, match="its tokenizer cannot be loaded"):
        check_policy_dir(path)


def test_prompts_are_measured_against_the_default_model_before_the_run_dir(
        tiny_model_dir, tmp_path, monkeypatch, capsys):
    """Without --model the policy is the detox-mini model, known only once it is built:
    long prompts are refused then, before the run directory is created or Ray started.
    (A saved tiny model stands in for the minutes of pre-training.)"""
    import ray

    from iif_ray.cli import main
    from iif_ray.lm import pretrain

    monkeypatch.setattr(pretrain, "detox_model", lambda *a, **k: tiny_model_dir)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    prompts = tmp_path / "long.txt"
    prompts.write_text("the\nthe the\n" + "the " * 200 + "\n")
    assert main(["train-lm", "--out", str(tmp_path / "run"), "--prompts", str(prompts)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "1 prompt(s) longer than 115 tokens" in err[0]
    assert not (tmp_path / "run").exists() and not ray.is_initialized()
