"""Shared LM fixtures: tiny models written with ``save_pretrained``, as a user's would be."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForSequenceClassification

from iif_ray.lm.detox import Language
from iif_ray.lm.models import tiny_llama, word_tokenizer


@pytest.fixture(scope="session")
def classifier_dir(tmp_path_factory):
    tok = word_tokenizer(["good", "kind", "idiot", "fool", "the"])
    config = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                         num_labels=2, id2label={0: "hate", 1: "nothate"},
                         label2id={"hate": 0, "nothate": 1}, pad_token_id=0)
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(config)
    path = tmp_path_factory.mktemp("clf")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path, model, tok




@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """An untrained tiny policy on detox-mini's vocabulary, saved like a downloaded model."""
    lang = Language.build(0)
    tok = word_tokenizer(lang.clean + lang.insults)
    path = tmp_path_factory.mktemp("model")
    tiny_llama(len(tok), hidden=32, intermediate=64, layers=2).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def arith_model_dir(tmp_path_factory):
    """An untrained tiny policy with arith's character tokenizer, saved like a user's model."""
    from iif_ray.lm.arith import char_tokenizer

    tok = char_tokenizer()
    path = tmp_path_factory.mktemp("arith-model")
    tiny_llama(len(tok), hidden=32, intermediate=64, layers=2).save_pretrained(path)
    tok.save_pretrained(path)
    return path
