"""Sequence-record scores (ghost inner products, forward-mode JVP) against the oracle: one
backward per record on its own unpadded sequence, on a tiny Llama built from a config."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from iif_ray.attribution.sequence import (
    PolicyLoss,
    SequenceBatch,
    parameter_set,
    sequence_losses,
    sequence_scores,
    target_gradient,
    target_weights,
    token_logp,
)

VOCAB = 50


def _model(lora: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=64, attn_implementation="eager",
                      tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg)
    if lora:
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                                 target_modules=["q_proj", "v_proj"],
                                                 init_lora_weights=False))
    return model.eval()


def _batch(model, *, left_pad: bool, grpo: bool, seed: int = 1) -> SequenceBatch:
    """Six records of unequal lengths, padded, with 2-3 prompt tokens and a response."""
    g = torch.Generator().manual_seed(seed)
    lengths, width = [12, 9, 7, 12, 5, 10], 12
    ids = torch.zeros(6, width, dtype=torch.long)
    attn = torch.zeros(6, width, dtype=torch.long)
    resp = torch.zeros(6, width)
    for i, n in enumerate(lengths):
        cols = slice(width - n, width) if left_pad else slice(0, n)
        ids[i, cols] = torch.randint(1, VOCAB, (n,), generator=g)
        attn[i, cols] = 1
        start = cols.start + 2 + i % 2
        resp[i, start:cols.stop] = 1
    if grpo:  # one advantage per sequence, group-relative over groups of 3
        rewards = torch.rand(6, generator=g)
        grouped = rewards.view(2, 3)
        seq_adv = ((grouped - grouped.mean(1, keepdim=True)) / grouped.std(1, keepdim=True))
        adv = seq_adv.reshape(6, 1).expand(6, width).clone()
    else:
        adv = torch.randn(6, width, generator=g)
    probe = SequenceBatch(ids, attn, resp, advantages=adv)
    with torch.no_grad():
        now = token_logp(model, probe)
    # The rollout policy differs a little from theta_k, so some ratios are clipped.
    old = now + 0.3 * torch.randn(6, width, generator=g)
    ref = now + 0.1 * torch.randn(6, width, generator=g)
    return SequenceBatch(ids, attn, resp, old_logp=old, advantages=adv, ref_logp=ref)


def _validation(model, kind: str):
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(1, VOCAB, (4, 8), generator=g)
    batch = SequenceBatch(ids, torch.ones_like(ids), torch.cat([torch.zeros(4, 3),
                                                                torch.ones(4, 5)], 1))
    values = torch.randn(4, generator=g)
    return batch, target_weights(kind, batch, values, group_size=2 if kind == "grpo" else None)


CASES = [
    # (lora, parameter set, left padding, loss)
    (True, "lora", True, PolicyLoss(aggregation="token-mean")),  # PPO, LoRA
    (True, "lora", False, PolicyLoss(aggregation="seq-mean-token-mean", kl_coef=0.04)),  # GRPO
    (False, "linear", True, PolicyLoss(aggregation="seq-mean-token-mean", kl_coef=0.04)),
    (False, "linear", False, PolicyLoss(aggregation="token-mean")),
]


@pytest.mark.parametrize(("lora", "pset", "left_pad", "spec"), CASES)
@pytest.mark.parametrize("kind", ["seq-return", "grpo"])
def test_scores_equal_the_per_sequence_autograd_loop(lora, pset, left_pad, spec, kind):
    model = _model(lora)
    if pset == "lora":
        params = parameter_set(model, "lora")
        assert len(params) == 8  # q and v of two layers, A and B each
    else:
        names = [n for n, _ in model.named_parameters()
                 if any(k in n for k in ("q_proj", "o_proj", "up_proj", "down_proj"))]
        params = parameter_set(model, names)
    batch = _batch(model, left_pad=left_pad, grpo=spec.aggregation != "token-mean")
    vbatch, weights = _validation(model, kind)
    target = target_gradient(model, params, vbatch, weights)
    oracle = sequence_scores(model, params, batch, spec, target, "bruteforce")
    assert oracle.abs().max() > 0 and (oracle > 0).any() and (oracle < 0).any()
    scale = oracle.abs().max()
    for method in ("ghost", "jvp"):
        got = sequence_scores(model, params, batch, spec, target, method)
        assert ((got - oracle).abs() / scale).max() < 1e-4, (method, got, oracle)


def test_sequence_losses_sum_to_the_batch_loss_and_padding_is_invisible():
    model = _model(lora=True)
    batch = _batch(model, left_pad=True, grpo=False)
    for agg in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum"):
        spec = PolicyLoss(aggregation=agg)
        losses = sequence_losses(token_logp(model, batch), batch, spec)
        mask = batch.response_mask
        ratio = torch.exp(token_logp(model, batch) - batch.old_logp)
        tok = -torch.minimum(ratio * batch.advantages,
                             ratio.clamp(0.8, 1.2) * batch.advantages) * mask
        want = {"token-mean": tok.sum() / mask.sum(),
                "seq-mean-token-mean": (tok.sum(1) / mask.sum(1)).mean(),
                "seq-mean-token-sum": tok.sum(1).mean()}[agg]
        assert losses.sum().item() == pytest.approx(want.item(), rel=1e-5)
    # A record's log-probs do not depend on its padding.
    padded = token_logp(model, batch)[2][batch.attention_mask[2].bool()]
    alone = token_logp(model, batch.unpadded(2))[0]
    torch.testing.assert_close(padded[1:], alone[1:], atol=1e-5, rtol=1e-5)


def test_targets_and_errors():
    model = _model(lora=True)
    vbatch, _ = _validation(model, "seq-return")
    w = target_weights("grpo", vbatch, torch.tensor([1.0, 0.0, 5.0, 5.0]), group_size=2)
    # Groups (1, 0) and (5, 5): the second has no spread, so its weights vanish.
    assert w[2:].abs().max() < 1e-4 and w[0, 3:].gt(0).all() and w[1, 3:].lt(0).all()
    with pytest.raises(ValueError, match="group_size dividing 4"):
        target_weights("grpo", vbatch, torch.ones(4), group_size=3)
    with pytest.raises(ValueError, match="unknown sequence target 'x'"):
        target_weights("x", vbatch, torch.ones(4))
    with pytest.raises(ValueError, match="unknown aggregation 'mean'"):
        PolicyLoss(aggregation="mean")
    with pytest.raises(ValueError, match=r"ghost scores need parameters of nn\.Linear"):
        params = parameter_set(model, [n for n, _ in model.named_parameters()
                                       if "embed_tokens" in n])
        sequence_scores(model, params, _batch(model, left_pad=True, grpo=False),
                        PolicyLoss(), {n: torch.ones_like(p) for n, p in params.items()})
    with pytest.raises(ValueError, match="matched nothing"):
        parameter_set(_model(lora=False), "lora")
