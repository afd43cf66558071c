"""Sampling responses and turning them into sequence records.

A record is prompt + response in one row: prompts left-padded to a common width (generation
appends on the right), responses right-padded after their end-of-sequence token.
``response_mask`` marks the generated tokens up to and including the first EOS; the attention
mask covers the real prompt tokens and those.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from iif_ray.attribution.sequence import SequenceBatch, token_logp
from iif_ray.lm.inputs import context_length, prompt_token_limit
from iif_ray.options import above, at_least, check_options, option


@dataclass(frozen=True)
class SamplingSettings:
    max_new_tokens: int = option(12, accepts=at_least(1), help="response length limit, tokens")
    temperature: float = option(1.0, accepts=above(0), help="sampling temperature")
    top_k: int = option(0, accepts=at_least(0),
                        help="sample among the k likeliest tokens (0: the policy's own "
                             "distribution)")

    def __post_init__(self) -> None:
        check_options(self)


def records_from_generation(output_ids: torch.Tensor, prompt_mask: torch.Tensor,
                            eos_id: int, pad_id: int) -> SequenceBatch:
    """Records from ``generate``'s output ``[B, P + N]`` and the prompts' mask ``[B, P]``."""
    width = prompt_mask.shape[1]
    new = output_ids[:, width:]
    is_eos = new == eos_id
    # Tokens up to and including the first EOS are the response; later ones are padding.
    before_eos = (is_eos.long().cumsum(dim=1) - is_eos.long()) == 0
    response = before_eos.long()
    ids = output_ids.clone()
    ids[:, width:] = torch.where(response.bool(), new, torch.full_like(new, pad_id))
    attention = torch.cat([prompt_mask.long(), response], dim=1)
    response_mask = torch.cat([torch.zeros_like(prompt_mask, dtype=torch.float32),
                               response.float()], dim=1)
    return SequenceBatch(ids, attention, response_mask)


@torch.no_grad()
def sample_records(model: nn.Module, tokenizer: Any, prompts: Sequence[str],
                   settings: SamplingSettings, seed: int, *, greedy: bool = False
                   ) -> SequenceBatch:
    """Sample one response per prompt (repeat prompts for groups) with ``model.generate``,
    on the model's device; the records come back on that device. ``greedy``: the likeliest
    token at every step instead (no sampling noise; temperature and top-k unused), as an
    exact-answer evaluation wants."""
    enc = tokenizer(list(prompts), padding=True, return_tensors="pt",
                    add_special_tokens=False)
    # A prompt too long for the context keeps its last ``limit`` tokens (prompts are
    # left-padded, so those are the last columns): generating past the context would read
    # positions the model never learnt, with memory growing with the prompt.
    limit = prompt_token_limit(context_length(getattr(model, "config", None)),
                               settings.max_new_tokens)
    if limit is not None and enc["input_ids"].shape[1] > max(1, limit):
        enc = {k: enc[k][:, -max(1, limit):] for k in ("input_ids", "attention_mask")}
    bos = torch.full((len(prompts), 1), tokenizer.bos_token_id)
    input_ids = torch.cat([bos, enc["input_ids"]], dim=1)
    prompt_mask = torch.cat([torch.ones_like(bos), enc["attention_mask"]], dim=1)
    # Left padding: move each row's BOS next to its first real token.
    input_ids, prompt_mask = _left_align(input_ids, prompt_mask, tokenizer.pad_token_id)
    device = next(model.parameters()).device
    input_ids, prompt_mask = input_ids.to(device), prompt_mask.to(device)
    torch.manual_seed(seed)  # every device's generator, a GPU's included
    sampling = ({"do_sample": False} if greedy else
                {"do_sample": True, "temperature": settings.temperature,
                 "top_k": settings.top_k or None, "top_p": 1.0})
    out = model.generate(input_ids=input_ids, attention_mask=prompt_mask,
                         max_new_tokens=settings.max_new_tokens, **sampling,
                         pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    return records_from_generation(out, prompt_mask, tokenizer.eos_token_id,
                                   tokenizer.pad_token_id)


def forced_records(tokenizer: Any, prompts: Sequence[str], responses: Sequence[str]
                   ) -> SequenceBatch:
    """Records of given responses (teacher forcing) in :func:`sample_records`'s layout: BOS
    and the prompt left-padded, the response's tokens right after, then padding; the
    response mask marks the response's tokens. What an exact evaluation scores a known
    answer with (its probability under the policy, no sampling)."""
    enc = tokenizer(list(prompts), padding=True, return_tensors="pt",
                    add_special_tokens=False)
    bos = torch.full((len(prompts), 1), tokenizer.bos_token_id)
    ids, mask = _left_align(torch.cat([bos, enc["input_ids"]], dim=1),
                            torch.cat([torch.ones_like(bos), enc["attention_mask"]], dim=1),
                            tokenizer.pad_token_id)
    answers = [tokenizer(r, add_special_tokens=False)["input_ids"] for r in responses]
    width = max(len(a) for a in answers)
    new = torch.full((len(prompts), width), tokenizer.pad_token_id)
    response = torch.zeros(len(prompts), width, dtype=torch.long)
    for i, a in enumerate(answers):
        new[i, :len(a)] = torch.tensor(a, dtype=new.dtype)
        response[i, :len(a)] = 1
    return SequenceBatch(torch.cat([ids, new], dim=1), torch.cat([mask.long(), response], 1),
                         torch.cat([torch.zeros_like(mask, dtype=torch.float32),
                                    response.float()], dim=1))


@torch.no_grad()
def answer_probability(model: nn.Module, tokenizer: Any, prompts: Sequence[str],
                       answers: Sequence[str]) -> np.ndarray:
    """Each prompt's probability under ``model``'s own distribution of answering exactly
    ``answers`` (teacher-forced, :func:`forced_records`: the product of the answer's token
    probabilities, EOS included), on the model's device: an exact-answer task's expected
    reward without sampling noise."""
    batch = forced_records(tokenizer, prompts, answers).to(next(model.parameters()).device)
    logp = token_logp(model, batch)
    return torch.exp((logp * batch.response_mask).sum(1)).cpu().numpy()


def _left_align(ids: torch.Tensor, mask: torch.Tensor, pad_id: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.argsort(mask, dim=1, stable=True)  # pads (0) first, then real tokens
    ids = torch.gather(ids, 1, order)
    mask = torch.gather(mask, 1, order)
    return torch.where(mask.bool(), ids, torch.full_like(ids, pad_id)), mask


def response_texts(tokenizer: Any, batch: SequenceBatch, *,
                   skip_special_tokens: bool = True) -> list[str]:
    """The generated part of every record, decoded (special tokens dropped unless an exact
    checker needs to see them: an answer with a stray padding token inside is wrong)."""
    out = []
    for ids, m in zip(batch.input_ids, batch.response_mask, strict=True):
        out.append(tokenizer.decode(ids[m.bool()].tolist(),
                                    skip_special_tokens=skip_special_tokens))
    return out
