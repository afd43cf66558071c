"""LM learner: advantages against direct loops; dropped rows never reach the update, whose
loss denominators are the kept rows'."""

from __future__ import annotations

import copy

import pytest
import torch

from iif_ray.attribution.sequence import SequenceBatch, target_weights
from iif_ray.lm.advantages import (
    AdaptiveKL,
    gae,
    grpo_advantages,
    kl_penalised_rewards,
    whiten,
)
from iif_ray.lm.learner import (
    LMLearner,
    LMPolicy,
    UpdateSettings,
    ValueTargets,
    trim_to_minibatches,
)
from iif_ray.lm.models import tiny_llama, with_lora

VOCAB = 40


def _policy(seed=0) -> LMPolicy:
    model = with_lora(tiny_llama(VOCAB, hidden=32, intermediate=64, layers=2, seed=seed),
                      rank=4, target_modules=["q_proj", "v_proj"])
    return LMPolicy(model)


def _batch(n=8, width=10, seed=0) -> SequenceBatch:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (n, width), generator=g)
    attn = torch.ones(n, width, dtype=torch.long)
    resp = torch.zeros(n, width)
    for i in range(n):
        pad = i % 3
        attn[i, :pad] = 0
        ids[i, :pad] = 0
        end = width - (i % 2)
        resp[i, pad + 3:end] = 1
        attn[i, end:] = 0
        ids[i, end:] = 0
    return SequenceBatch(ids, attn, resp)


def test_gae_matches_a_direct_loop():
    g = torch.Generator().manual_seed(1)
    rewards, values = torch.randn(4, 7, generator=g), torch.randn(4, 7, generator=g)
    mask = torch.zeros(4, 7)
    for i, (a, b) in enumerate([(2, 7), (0, 5), (3, 4), (1, 6)]):
        mask[i, a:b] = 1
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    for i in range(4):
        idx = mask[i].nonzero().ravel().tolist()
        running = 0.0
        for k in reversed(range(len(idx))):
            t = idx[k]
            nxt = values[i, idx[k + 1]] if k + 1 < len(idx) else 0.0
            delta = rewards[i, t] + 0.9 * nxt - values[i, t]
            running = float(delta) + 0.9 * 0.8 * running
            assert adv[i, t].item() == pytest.approx(running, abs=1e-5)
            assert ret[i, t].item() == pytest.approx(running + float(values[i, t]), abs=1e-5)
    assert (adv[mask == 0] == 0).all()


def test_kl_rewards_grpo_whiten_and_controller():
    mask = torch.tensor([[0, 1, 1, 0], [0, 0, 1, 1.0]])
    logp, ref = torch.full((2, 4), -1.0), torch.full((2, 4), -1.5)
    r = kl_penalised_rewards(torch.tensor([2.0, -1.0]), logp, ref, mask, beta=0.2)
    torch.testing.assert_close(r, torch.tensor([[0, -0.1, 1.9, 0], [0, 0, -0.1, -1.1]]))
    adv = grpo_advantages(torch.tensor([1.0, 3.0, 5.0, 5.0]), torch.ones(4, 2), group_size=2)
    s = 2 ** 0.5
    torch.testing.assert_close(adv[:, 0], torch.tensor([-1 / s, 1 / s, 0, 0]), atol=1e-5,
                               rtol=0)
    with pytest.raises(ValueError, match="group_size must divide"):
        grpo_advantages(torch.ones(5), torch.ones(5, 2), group_size=2)
    w = whiten(torch.tensor([[1.0, 2.0, 99.0], [3.0, 4.0, 99.0]]), torch.tensor([[1, 1, 0],
                                                                               [1, 1, 0.0]]))
    assert w[:, :2].mean().abs() < 1e-6 and (w[:, 2] == 0).all()
    kl = AdaptiveKL(beta=0.1, target=6.0, horizon=100)
    assert kl.update(12.0, n_steps=10) == pytest.approx(0.1 * 1.02)  # too far: beta up
    assert kl.update(0.0, n_steps=10) < 0.1 * 1.02  # too close: beta down


def _prepared(policy, batch, estimator):
    learner = LMLearner(policy, UpdateSettings(estimator=estimator, minibatch_size=2, epochs=2))
    old, ref, values = learner.prepare(batch)
    scores = torch.linspace(-1, 1, batch.input_ids.shape[0])
    if estimator == "ppo":
        adv, ret = gae(kl_penalised_rewards(scores, old, ref, batch.response_mask, 0.1), values,
                       batch.response_mask)
        targets = ValueTargets(values, ret)
        adv = whiten(adv, batch.response_mask)
    else:
        adv, targets = grpo_advantages(scores, batch.response_mask, group_size=2), None
    full = SequenceBatch(batch.input_ids, batch.attention_mask, batch.response_mask,
                         old_logp=old, advantages=adv, ref_logp=ref)
    return full, targets


@pytest.mark.parametrize("estimator", ["ppo", "grpo"])
def test_dropped_rows_never_reach_the_update(estimator):
    """Updating on the full batch with kept rows K equals updating on a batch that holds only
    K: same parameters to the bit, even when the dropped rows hold NaN. So the dropped rows
    reach neither the gradient nor any loss denominator."""
    batch = _batch()
    base = _policy()
    full, targets = _prepared(base, batch, estimator)
    kept = torch.tensor([0, 2, 3, 6])

    poisoned = SequenceBatch(full.input_ids, full.attention_mask, full.response_mask,
                             old_logp=full.old_logp, ref_logp=full.ref_logp,
                             advantages=full.advantages.clone())
    dropped = torch.tensor([1, 4, 5, 7])
    poisoned.advantages[dropped] = float("nan")
    a = LMLearner(copy.deepcopy(base), UpdateSettings(estimator=estimator, minibatch_size=2,
                                                      epochs=2), seed=3)
    metrics = a.update(poisoned, kept, targets)
    b = LMLearner(copy.deepcopy(base), UpdateSettings(estimator=estimator, minibatch_size=2,
                                                      epochs=2), seed=3)
    b.update(full.select(kept), torch.arange(4),
             targets.select(kept) if targets is not None else None)
    for (name, pa), (_, pb) in zip(a.policy.named_parameters(), b.policy.named_parameters(),
                                   strict=True):
        assert torch.equal(pa, pb), name
    assert metrics["rows"] == 4 and metrics["steps"] == 4
    assert all(torch.isfinite(p).all() for p in a.policy.parameters())
    moved = [n for (n, p), q in zip(a.policy.named_parameters(), base.parameters(), strict=True)
             if not torch.equal(p, q)]
    assert moved and all("lora_" in n or "value_head" in n for n in moved)


def test_minibatch_denominators_are_the_kept_tokens():
    """One step on one minibatch moves the policy exactly as the hand-written token-mean loss
    over that minibatch's own response tokens does."""
    batch = _batch()
    base = _policy()
    full, _ = _prepared(base, batch, "grpo")
    kept = torch.tensor([1, 4])
    settings = UpdateSettings(estimator="grpo", aggregation="token-mean", epochs=1,
                              minibatch_size=2, lr=0.05, max_grad_norm=1e9)
    learner = LMLearner(copy.deepcopy(base), settings, seed=0)
    learner.update(full, kept)
    manual = copy.deepcopy(base)
    sub = full.select(kept)
    logp, _ = manual.logp_and_values(sub)
    m = sub.response_mask
    ratio = torch.exp(logp - sub.old_logp)
    per_tok = -torch.minimum(ratio * sub.advantages, ratio.clamp(0.8, 1.2) * sub.advantages)
    loss = (per_tok * m).sum() / m.sum()  # the kept minibatch's own token count
    opt = torch.optim.Adam([p for p in manual.parameters() if p.requires_grad], lr=0.05)
    loss.backward()
    opt.step()
    for (n, p), q in zip(learner.policy.named_parameters(), manual.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5, msg=n)


def test_trim_and_reference_and_scores():
    g = torch.Generator().manual_seed(0)
    kept = torch.tensor([0, 2, 3, 5, 6, 7, 9])
    t = trim_to_minibatches(kept, 3, g)
    assert len(t) == 6 and set(t.tolist()) <= set(kept.tolist()) and torch.equal(t, t.sort()[0])
    assert torch.equal(trim_to_minibatches(kept[:6], 3, g), kept[:6])
    policy = _policy()
    batch = _batch()
    learner = LMLearner(policy, UpdateSettings(estimator="grpo", minibatch_size=2))
    old, ref, _ = learner.prepare(batch)
    torch.testing.assert_close(old, ref)  # peft starts LoRA at B = 0: the reference policy
    known = torch.full_like(ref, -1.0)  # a known reference is passed through, not recomputed
    again = learner.prepare(batch, ref_logp=known)
    assert again[1] is known and torch.equal(again[0], old)
    full, _ = _prepared(policy, batch, "grpo")
    # Make the adapters non-trivial, then the three scoring methods agree.
    with torch.no_grad():
        for n, p in policy.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    val = _batch(n=4, seed=5)
    weights = target_weights("seq-return", val, torch.tensor([1.0, -1.0, 0.5, 2.0]))
    ghost = learner.scores(full, val, weights, "ghost")
    oracle = learner.scores(full, val, weights, "bruteforce")
    assert ((ghost - oracle).abs().max() / oracle.abs().max()) < 1e-4
    with pytest.raises(ValueError, match="not a multiple of minibatch_size"):
        learner.update(full, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"estimator must be one of .*, got 'a2c'"):
        UpdateSettings(estimator="a2c")


def test_bfloat16_base_weights_score_like_float32():
    """The GPU setting (base model in bf16, adapters and scores in float32): ghost scores
    equal the brute-force loop in that precision, and rank records as float32 does."""
    from scipy.stats import spearmanr

    from iif_ray.attribution.sequence import scores_bruteforce, sequence_scores

    base = tiny_llama(VOCAB, hidden=32, intermediate=64, layers=2, seed=0)
    torch.manual_seed(0)
    full32 = with_lora(copy.deepcopy(base), rank=4, target_modules=["q_proj", "v_proj"])
    with torch.no_grad():  # adapters that matter (B starts at zero)
        for n, p in full32.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    half = with_lora(copy.deepcopy(base).to(torch.bfloat16), rank=4,
                     target_modules=["q_proj", "v_proj"])
    half.load_state_dict({k: v for k, v in full32.state_dict().items() if "lora" in k},
                         strict=False)
    assert all(p.dtype == torch.float32 for p in half.parameters() if p.requires_grad)
    batch = _batch(n=24, seed=3)
    adv = torch.randn(batch.input_ids.shape, generator=torch.Generator().manual_seed(1))
    scores = {}
    for name, model in (("float32", full32), ("bfloat16", half)):
        learner = LMLearner(LMPolicy(model), UpdateSettings(minibatch_size=4))
        old, ref, values = learner.prepare(batch)
        assert old.dtype == torch.float32
        rows = SequenceBatch(batch.input_ids, batch.attention_mask, batch.response_mask, old,
                             adv * batch.response_mask, ref, old_values=values,
                             returns=values + adv)
        target = learner.target(batch, batch.response_mask / 24)
        spec = learner.settings.policy_loss().for_batch(rows)
        params = learner.policy.scoring_parameters()
        head = learner.policy.value_head
        scores[name] = sequence_scores(model, params, rows, spec, target, "ghost", head)
        oracle = scores_bruteforce(model, params, rows, spec, target, head)
        torch.testing.assert_close(scores[name], oracle, rtol=1e-4,
                                   atol=1e-4 * float(oracle.abs().max()))
    assert spearmanr(scores["float32"], scores["bfloat16"])[0] > 0.99
    assert (scores["float32"].sign() == scores["bfloat16"].sign()).float().mean() > 0.9


def test_validation_weights_ignore_the_runs_estimator_and_batch_layout():
    """The seq-return target weighs validation responses by PPO's single-response GAE,
    whatever the run trains with: a GRPO run with large groups and a minibatch a single
    response per prompt could not fill gets the same weights as a PPO run."""
    from iif_ray.lm.advantages import validation_weights
    from iif_ray.lm.learner import UpdateSettings
    from iif_ray.lm.spec import LMRunSpec

    g = torch.Generator().manual_seed(0)
    n, t = 8, 6
    response = torch.zeros(n, t)
    response[:, 2:] = 1.0
    batch = SequenceBatch(torch.randint(0, 9, (n, t), generator=g), torch.ones(n, t).long(),
                          response)
    prepared = tuple(torch.randn(n, t, generator=g) for _ in range(3))
    rewards = torch.randn(n, generator=g)
    ppo = LMRunSpec(model="m", out_dir="o", prompts_per_round=8, group_size=1,
                    update=UpdateSettings(minibatch_size=4))
    grpo = LMRunSpec(model="m", out_dir="o", prompts_per_round=8, group_size=4,
                     update=UpdateSettings(estimator="grpo", minibatch_size=16))
    expected = validation_weights(ppo, batch, rewards, prepared, 0.05)
    torch.testing.assert_close(validation_weights(grpo, batch, rewards, prepared, 0.05),
                               expected, rtol=0, atol=0)
    assert expected.abs().sum() > 0


def _written_out_record_losses(policy: LMPolicy, rows: SequenceBatch, clip: float,
                               vf_coef: float, vf_clip: float) -> torch.Tensor:
    """TRL's PPO loss of each record, written out from the model's raw outputs (no project
    loss code): token-masked clipped policy loss plus ``vf_coef`` x 0.5 x the clipped value
    error, both over the batch's response tokens."""
    positions = (rows.attention_mask.cumsum(-1) - 1).clamp(min=0)
    out = policy.model(input_ids=rows.input_ids, attention_mask=rows.attention_mask,
                       position_ids=positions, output_hidden_states=True)
    logp_all = torch.log_softmax(out.logits[:, :-1].float(), -1)
    logp = torch.zeros(rows.input_ids.shape)
    logp[:, 1:] = logp_all.gather(-1, rows.input_ids[:, 1:, None]).squeeze(-1)
    head = policy.value_head(out.hidden_states[-1]).squeeze(-1)
    values = torch.zeros(rows.input_ids.shape)
    values[:, 1:] = head[:, :-1]
    m, a = rows.response_mask, rows.advantages
    ratio = torch.exp(logp - rows.old_logp)
    pg = -torch.minimum(ratio * a, ratio.clamp(1 - clip, 1 + clip) * a)
    v_clipped = rows.old_values + (values - rows.old_values).clamp(-vf_clip, vf_clip)
    vf = 0.5 * torch.maximum((values - rows.returns) ** 2, (v_clipped - rows.returns) ** 2)
    return ((pg + vf_coef * vf) * m).sum(-1) / m.sum()


def test_scores_include_the_value_term_as_the_update_does():
    """Scores with the value term (vf_coef 0.1, the paper's) differ from scores without it,
    and both equal a per-record autograd loop over the loss written out in this test; the
    loss the scores differentiate is the loss the update takes its step on."""
    policy = _policy()
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():  # adapters and a value head that matter (both start at zero)
        for n, p in policy.named_parameters():
            if "lora_B" in n or "value_head" in n:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    batch = _batch()
    old, ref, values = LMLearner(policy, UpdateSettings(minibatch_size=2)).prepare(batch)
    m = batch.response_mask
    rows = SequenceBatch(batch.input_ids, batch.attention_mask, m,
                         old_logp=old + 0.2 * torch.randn(old.shape, generator=g) * m,
                         advantages=torch.randn(old.shape, generator=g) * m, ref_logp=ref,
                         old_values=values + 0.3 * torch.randn(old.shape, generator=g) * m,
                         returns=torch.randn(old.shape, generator=g) * m)
    val = _batch(n=4, seed=5)
    weights = target_weights("seq-return", val, torch.tensor([1.0, -1.0, 0.5, 2.0]))
    params = policy.scoring_parameters()
    positions = (val.attention_mask.cumsum(-1) - 1).clamp(min=0)
    logits = policy.model(input_ids=val.input_ids, attention_mask=val.attention_mask,
                          position_ids=positions).logits
    val_logp = torch.log_softmax(logits[:, :-1], -1).gather(
        -1, val.input_ids[:, 1:, None]).squeeze(-1)
    grad_f = torch.autograd.grad((val_logp * weights[:, 1:]).sum(), list(params.values()))
    n = rows.input_ids.shape[0]
    got = {}
    for vf_coef in (0.0, 0.1):
        settings = UpdateSettings(minibatch_size=n, epochs=1, vf_coef=vf_coef, lr=1e-9)
        learner = LMLearner(policy, settings)
        losses = _written_out_record_losses(policy, rows, 0.2, vf_coef, 0.2)
        oracle = torch.stack([
            -sum((gi * gf).sum() for gi, gf in zip(
                torch.autograd.grad(losses[i], list(params.values()), retain_graph=True),
                grad_f, strict=True))
            for i in range(n)]).detach()
        for method in ("ghost", "jvp", "bruteforce"):
            got[vf_coef, method] = learner.scores(rows, val, weights, method)
            torch.testing.assert_close(got[vf_coef, method], oracle, rtol=1e-4,
                                       atol=1e-4 * float(oracle.abs().max()))
        # One step over the whole batch: the update's loss is the records' losses summed.
        metrics = copy.deepcopy(learner).update(
            rows, torch.arange(n), ValueTargets(rows.old_values, rows.returns))
        total = metrics["policy_loss"] + vf_coef * metrics["value_loss"]
        assert total == pytest.approx(float(losses.detach().sum()), rel=1e-5)
    diff = (got[0.1, "ghost"] - got[0.0, "ghost"]).abs().max()
    assert diff > 0.05 * got[0.0, "ghost"].abs().max()  # the value term moves the scores


def test_last_token_advantage_picks_each_rows_last_response_token():
    """Right padding, left padding and a one-token response: the advantage at the last
    response token, whatever follows it."""
    from iif_ray.lm.advantages import last_token_advantage

    mask = torch.tensor([[0, 1, 1, 1, 0, 0],   # right padding after the response
                         [0, 0, 0, 1, 1, 1],   # left padding: the response ends the row
                         [1, 0, 0, 0, 0, 0],   # a single response token, first position
                         [0, 0, 1, 0, 1, 0.]])  # (gaps do not occur; the last one counts)
    adv = torch.arange(24.0).view(4, 6)
    batch = SequenceBatch(torch.zeros(4, 6, dtype=torch.long), torch.ones(4, 6), mask,
                          advantages=adv)
    torch.testing.assert_close(last_token_advantage(batch), torch.tensor([3.0, 11, 12, 22]))


def _two_responses():
    """Two validation responses of two tokens each (positions 1-2 of three), the policy at
    the reference (no KL) and a value head at zero: GAE (gamma 1, lambda 0.95) is then
    0.95 x the reward on the first token and the reward on the last."""
    mask = torch.tensor([[0, 1, 1], [0, 1, 1.0]])
    batch = SequenceBatch(torch.ones(2, 3, dtype=torch.long), torch.ones(2, 3), mask)
    zeros = torch.zeros(2, 3)
    return batch, (zeros, zeros, zeros), torch.tensor([1.0, 3.0])


def test_validation_weights_by_hand():
    """seq-return: token advantages [0.95, 1] and [2.85, 3], whitened over the four response
    tokens (mean 1.95, unbiased variance 3.815 / 3, as TRL's masked_whiten), the last
    token's taken, centred on their mean, spread over each response's tokens / 2 responses.
    reward: the rewards centred (-1, +1), / 2."""
    from iif_ray.lm.advantages import validation_weights
    from iif_ray.lm.spec import LMRunSpec

    batch, prepared, rewards = _two_responses()
    spec = LMRunSpec(model="m", out_dir="o", prompts_per_round=2, group_size=1,
                     update=UpdateSettings(minibatch_size=1))
    std = (3.815 / 3) ** 0.5
    last = [(1 - 1.95) / std, (3 - 1.95) / std]
    centred = [last[0] - sum(last) / 2, last[1] - sum(last) / 2]
    expected = torch.tensor([[0.0, centred[0] / 2, centred[0] / 2],
                             [0.0, centred[1] / 2, centred[1] / 2]])
    got = validation_weights(spec, batch, rewards, prepared, beta=0.05)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert got[1, 2].item() == pytest.approx(0.443387, abs=1e-5)
    from dataclasses import replace

    reward = validation_weights(replace(spec, target="reward"), batch, rewards, prepared, 0.05)
    torch.testing.assert_close(reward, torch.tensor([[0, -0.5, -0.5], [0, 0.5, 0.5]]))
    # Whitened one response at a time (chunks of 1), a two-token response's last advantage
    # is +1/sqrt(2) whatever its reward: equal weights, centred to zero.
    alone = validation_weights(replace(spec, target_whiten_chunk=1), batch, rewards,
                               prepared, 0.05)
    torch.testing.assert_close(alone, torch.zeros(2, 3), rtol=0, atol=1e-6)


def test_whiten_in_chunks_by_hand():
    """Chunks of 2 rows: each chunk's own mean and unbiased variance over its masked
    entries; a shorter last chunk too."""
    from iif_ray.lm.advantages import whiten_chunks

    values = torch.tensor([[1.0, 3.0], [5.0, 7.0], [0.0, 10.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    got = whiten_chunks(values, mask, 2)
    std = (((1 - 3) ** 2 + 0 + (5 - 3) ** 2) / 2) ** 0.5  # chunk 1: 1, 3, 5 (7 masked out)
    expected = torch.tensor([[-2 / std, 0.0], [2 / std, 0.0], [-(50 ** -0.5) * 5, 5 / 50 ** 0.5]])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(whiten_chunks(values, mask, 0), whiten(values, mask))
