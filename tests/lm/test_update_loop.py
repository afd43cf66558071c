"""``LMLearner.update`` against the loop it replaced, written out below as the oracle: the
same weights, optimiser state, shuffler and metrics, to the bit.

The update reads its per-step figures once per round instead of at every step, gathers an
epoch's rows once and slices minibatches from them, reads every minibatch's denominators
at once and lists the trainable parameters once; none of it may change a number.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
from torch import nn

from iif_ray.attribution.sequence import PolicyLoss, sequence_losses, value_losses
from iif_ray.lm.learner import LMLearner, UpdateSettings
from tests.lm.test_learner import _batch, _policy, _prepared


def oracle_update(learner: LMLearner, batch, kept, value_targets=None) -> dict[str, float]:
    """The update loop as it stood before (its checks and timer aside)."""
    s = learner.settings
    loss_spec = s.policy_loss()
    sums = {"policy_loss": 0.0, "value_loss": 0.0, "clip_frac": 0.0}
    steps = 0
    for _ in range(s.epochs):
        order = kept[torch.randperm(len(kept), generator=learner.generator)]
        for start in range(0, len(order), s.minibatch_size):
            rows = order[start:start + s.minibatch_size]
            sub = batch.select(rows)
            logp, values = learner.policy.logp_and_values(sub)
            pg = sequence_losses(logp, sub, loss_spec.for_batch(sub)).sum()
            loss = pg
            mask = sub.response_mask.float()
            if value_targets is not None and s.estimator == "ppo":
                vt = value_targets.select(rows)
                sub = replace(sub, old_values=vt.values, returns=vt.returns)
                vf = value_losses(values, sub, loss_spec.for_batch(sub)).sum()
                loss = loss + s.vf_coef * vf
                sums["value_loss"] += vf.item()
            learner.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if s.max_grad_norm:
                nn.utils.clip_grad_norm_(
                    [p for p in learner.policy.parameters() if p.requires_grad],
                    s.max_grad_norm)
            learner.optimizer.step()
            with torch.no_grad():
                ratio = torch.exp(logp - sub.old_logp)
                sums["clip_frac"] += float((((ratio - 1).abs() > s.clip).float() * mask).sum()
                                           / mask.sum().clamp(min=1))
            sums["policy_loss"] += pg.item()
            steps += 1
    return {k: v / max(steps, 1) for k, v in sums.items()}


def assert_same_learners(a: LMLearner, b: LMLearner) -> None:
    for (name, pa), (_, pb) in zip(a.policy.named_parameters(), b.policy.named_parameters(),
                                   strict=True):
        assert torch.equal(pa, pb), name
    sa, sb = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
    assert sa.keys() == sb.keys()
    for k in sa:
        for field in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(sa[k][field], sb[k][field]), (k, field)
    assert torch.equal(a.generator.get_state(), b.generator.get_state())


CASES = {
    # the paper's minibatch 1, clipping every step (a tight norm)
    "ppo-mb1-clipped": dict(estimator="ppo", minibatch_size=1, max_grad_norm=0.05),
    "ppo-mb2": dict(estimator="ppo", minibatch_size=2),
    "ppo-mb3-unclipped": dict(estimator="ppo", minibatch_size=3, max_grad_norm=0.0),
    "grpo-mb2-kl": dict(estimator="grpo", minibatch_size=2, kl_coef=0.1,
                        aggregation="seq-mean-token-mean"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_update_matches_the_loop_it_replaced(case):
    fields = CASES[case]
    base = _policy(seed=1)
    full, targets = _prepared(base, _batch(n=8, width=10, seed=2), fields["estimator"])
    settings = UpdateSettings(epochs=2, lr=0.01, **fields)
    kept = torch.tensor([0, 1, 2, 4, 5, 7])
    new = LMLearner(copy.deepcopy(base), settings, seed=5)
    old = LMLearner(copy.deepcopy(base), settings, seed=5)
    for _ in range(2):  # two rounds: the optimiser's moments carry over
        got = new.update(full, kept, targets)
        want = oracle_update(old, full, kept, targets)
        assert_same_learners(new, old)
        assert {k: got[k] for k in want} == want
        assert got["steps"] == 2 * len(kept) // settings.minibatch_size
    moved = [n for (n, p), q in zip(new.policy.named_parameters(), base.parameters(),
                                    strict=True) if not torch.equal(p, q)]
    assert moved  # the update did train


def test_no_kept_rows_is_no_step():
    base = _policy()
    full, targets = _prepared(base, _batch(), "ppo")
    learner = LMLearner(copy.deepcopy(base), UpdateSettings(minibatch_size=2), seed=0)
    out = learner.update(full, torch.arange(0), targets)
    assert out["steps"] == 0 and out["policy_loss"] == out["clip_frac"] == 0.0
    assert all(torch.equal(p, q) for p, q in zip(learner.policy.parameters(),
                                                 base.parameters(), strict=True))


def test_minibatch_denominators_read_at_once_are_each_minibatchs():
    batch = _batch(n=6, width=9, seed=4)
    spec = PolicyLoss(vf_coef=0.1)
    specs = spec.for_minibatches(batch, 2)
    assert specs == [spec.for_batch(batch.select(slice(i, i + 2))) for i in (0, 2, 4)]
    assert specs[0].seq_count == 2.0 and specs[0].token_count > 0
