"""Language-model policies and tokenizers: built from configs, or loaded from local paths.

Nothing downloads: a user points ``--model`` at a local Hugging Face directory (any causal LM,
e.g. a ``save_pretrained`` copy of the paper's gpt-neo-2.7B) and the project's own tiny models
are built from a ``transformers`` config. The tiny tokenizer is word-level (one id per
whitespace-separated word) so a small vocabulary covers a generated corpus exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")


def word_tokenizer(words: Iterable[str]) -> Any:
    """A word-level ``PreTrainedTokenizerFast``: special tokens first, then ``words`` in order.

    Prompts are left-padded (generation appends to the right).

    Raises:
        ValueError: a word with whitespace, or a duplicate.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = list(words)
    bad = [w for w in words if not w or any(c.isspace() for c in w)]
    if bad:
        raise ValueError(f"vocabulary words must be non-empty without whitespace: {bad[:3]}")
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for w in words:
        if w in vocab:
            raise ValueError(f"duplicate vocabulary word {w!r}")
        vocab[w] = len(vocab)
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>",
                                        bos_token="<bos>", eos_token="<eos>",
                                        unk_token="<unk>")
    tokenizer.padding_side = "left"
    return tokenizer


def tiny_llama(vocab_size: int, *, hidden: int = 128, layers: int = 4, heads: int = 4,
               intermediate: int = 512, max_positions: int = 128, seed: int = 0) -> nn.Module:
    """A Llama-style causal LM from a config (about 1.5M parameters at the defaults with a
    2k vocabulary). Eager attention: forward-mode scoring needs it."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=heads, max_position_embeddings=max_positions,
                         attn_implementation="eager", tie_word_embeddings=False,
                         pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def load_policy(path: str | Path, *, dtype: torch.dtype | None = None) -> tuple[nn.Module, Any]:
    """A causal LM and its tokenizer from a local directory (``save_pretrained`` layout).

    Raises:
        FileNotFoundError: ``path`` is not a directory with a model config.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"--model {str(path)!r} is not a local model directory (no "
                                "config.json); accepted: a directory written by "
                                "save_pretrained, e.g. a downloaded Hugging Face model")
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if tokenizer.pad_token is None:  # gpt-neo and friends ship none; generation needs one
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model, tokenizer


def with_lora(model: nn.Module, *, rank: int = 8, alpha: float = 16.0,
              target_modules: Sequence[str] | str = "all-linear") -> nn.Module:
    """Wrap ``model`` with LoRA adapters (peft); only the adapters train.

    ``target_modules="all-linear"`` adapts every Linear but the output head; the paper adapts
    the attention projections (``["q_proj", "v_proj"]`` in Llama naming).
    """
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0,
                        target_modules=target_modules if isinstance(target_modules, str)
                        else list(target_modules), task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def num_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
