"""Meaning of the score: one SGD step on record j changes the target by about ``eta * I_j``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from iif_ray.attribution import (
    ActionTarget,
    Categorical,
    FunctionalPolicy,
    RecordBatch,
    jvp_scores,
    ppo_record_losses,
    return_target,
    target_gradient,
)


def tiny_policy() -> FunctionalPolicy:
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    return FunctionalPolicy(net, Categorical())


def hand_made_batch(policy: FunctionalPolicy) -> dict[str, torch.Tensor]:
    obs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.5], [0.3, -0.7]],
                       dtype=torch.float64)
    actions = torch.tensor([0, 1, 2, 0, 1])
    adv_raw = torch.tensor([2.0, -1.0, 0.5, -2.0, 1.0], dtype=torch.float64)
    with torch.no_grad():
        logp = policy.logp(policy.params(), obs, actions)
    return {"obs": obs, "actions": actions, "logp_old": logp, "advantages_raw": adv_raw,
            "advantages": (adv_raw - adv_raw.mean()) / adv_raw.std()}


@pytest.mark.parametrize("target_name", ["return", "action"])
def test_first_order_prediction_and_sign(target_name: str) -> None:
    policy = tiny_policy()
    batch = hand_made_batch(policy)
    if target_name == "return":
        target = return_target
    else:
        target = ActionTarget(probe_obs=batch["obs"][:2], probe_actions=torch.tensor([2, 2]))
    f0, direction = target_gradient(policy, target, batch)
    records = RecordBatch(batch["obs"], batch["actions"], batch["logp_old"], batch["advantages"])
    scores = jvp_scores(policy, records, direction).numpy()
    assert (scores > 0).any() and (scores < 0).any(), "batch should hold helpful and harmful rows"

    theta = policy.params()
    big = np.abs(scores) > 1e-2 * np.abs(scores).max()
    for j in range(len(records)):
        loss_j = lambda p, j=j: ppo_record_losses(policy, p, records.slice(j, j + 1))[0]  # noqa: E731
        grad_j = torch.func.grad(loss_j)(theta)
        errors = []
        for eta in (1e-2, 1e-3, 1e-4):
            stepped = {k: theta[k] - eta * grad_j[k] for k in theta}
            delta = float(target(policy.bind(stepped), batch) - f0)
            predicted = eta * scores[j]
            errors.append(abs(delta - predicted))
            if big[j]:
                # Sign: a helpful record (positive score) really raises the target.
                assert np.sign(delta) == np.sign(scores[j])
                if eta <= 1e-3:
                    assert abs(delta - predicted) <= 0.05 * abs(predicted)
        # The prediction is first order: its error shrinks like eta^2.
        assert errors[2] <= errors[1] / 30 + 1e-14 and errors[1] <= errors[0] / 30 + 1e-14


def test_jvp_chunking_does_not_change_scores() -> None:
    policy = tiny_policy()
    batch = hand_made_batch(policy)
    _, direction = target_gradient(policy, return_target, batch)
    records = RecordBatch(batch["obs"], batch["actions"], batch["logp_old"], batch["advantages"])
    whole = jvp_scores(policy, records, direction)
    chunked = jvp_scores(policy, records, direction, chunk_size=2)
    torch.testing.assert_close(whole, chunked, rtol=1e-12, atol=1e-12)
