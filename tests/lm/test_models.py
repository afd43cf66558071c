"""Tiny LM policies: word tokenizer, config-built Llama, local loading, LoRA wrapping."""

from __future__ import annotations

import pytest
import torch

from iif_ray.lm.models import (
    SPECIAL_TOKENS,
    load_policy,
    num_parameters,
    tiny_llama,
    with_lora,
    word_tokenizer,
)

WORDS = [f"w{i}" for i in range(2048 - len(SPECIAL_TOKENS))]


def test_word_tokenizer_round_trip_and_left_padding():
    tok = word_tokenizer(["the", "cat", "sat"])
    enc = tok(["the cat sat", "cat"], padding=True)
    assert enc["input_ids"] == [[4, 5, 6], [0, 0, 5]]  # specials first, pads on the left
    assert enc["attention_mask"] == [[1, 1, 1], [0, 0, 1]]
    assert tok.decode([4, 5, 6]) == "the cat sat"
    assert tok("dog")["input_ids"] == [3]  # <unk>
    with pytest.raises(ValueError, match="duplicate vocabulary word 'cat'"):
        word_tokenizer(["cat", "cat"])
    with pytest.raises(ValueError, match="without whitespace"):
        word_tokenizer(["a b"])


def test_tiny_llama_size_save_load_and_generate(tmp_path):
    tok = word_tokenizer(WORDS)
    model = tiny_llama(len(tok))
    assert 1.4e6 < num_parameters(model) < 1.7e6  # the "about 1.5M parameters"
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded, loaded_tok = load_policy(tmp_path)
    ids = torch.tensor([[1, 10, 11, 12]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits)
    assert loaded_tok.padding_side == "left" and len(loaded_tok) == len(tok)
    enc = loaded_tok(["w1 w2 w3", "w5"], padding=True, return_tensors="pt")
    out = loaded.generate(**enc, max_new_tokens=5, do_sample=True, pad_token_id=0)
    assert out.shape == (2, 8)


def test_load_policy_refuses_a_path_that_is_not_a_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a local model directory"):
        load_policy(tmp_path / "nowhere")


def test_lora_trains_only_the_adapters():
    model = with_lora(tiny_llama(100, hidden=32, intermediate=64, layers=2),
                      rank=4, target_modules=["q_proj", "v_proj"])
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert num_parameters(model, trainable_only=True) == 2 * 2 * (32 * 4 + 4 * 32)
