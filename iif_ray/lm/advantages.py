"""Advantages for LM rounds, computed on the driver over the *whole* batch, before any row is
dropped (veRL PR 6375: rows masked before the baseline leaked into GRPO's group statistics).

* PPO (value head): per-token rewards ``-beta * (logp - ref_logp)`` plus the sequence reward on
  the last response token, GAE over response tokens (gamma 1, lambda 0.95 by default), as in
  TRL's and veRL's PPO; ``beta`` follows the adaptive KL controller of Ziegler et al. (2019).
* GRPO: each sequence's reward minus its group's mean, over the group's standard deviation,
  on every response token; the KL term then lives in the loss (``PolicyLoss.kl_coef``).

:func:`advantages` applies the spec's estimator to a round's batch (the role of veRL's
``core_algos``); :func:`validation_weights` gives the influence target its per-token weights
from the same estimator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from iif_ray.attribution.sequence import SequenceBatch, target_weights
from iif_ray.lm.learner import ValueTargets

if TYPE_CHECKING:
    from iif_ray.lm.spec import LMRunSpec


def gae(rewards: Tensor, values: Tensor, mask: Tensor, *, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[Tensor, Tensor]:
    """Advantages and returns over the masked (response) tokens of each row, ``[B, T]``.

    A row's response is one contiguous run of masked tokens; the value after its last token
    is 0 (the episode ends there).
    """
    mask = mask.float()
    adv = torch.zeros_like(rewards)
    running = torch.zeros(rewards.shape[0], dtype=rewards.dtype)
    next_value = torch.zeros_like(running)
    for t in reversed(range(rewards.shape[1])):
        m = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = m * (delta + gamma * lam * running)
        adv[:, t] = running
        next_value = m * values[:, t]
    return adv * mask, (adv + values) * mask


def kl_penalised_rewards(scores: Tensor, logp: Tensor, ref_logp: Tensor, mask: Tensor,
                         beta: float) -> Tensor:
    """Per-token rewards: ``-beta * (logp - ref_logp)`` on response tokens, plus each row's
    score on its last response token."""
    mask = mask.float()
    rewards = -beta * (logp - ref_logp) * mask
    last = (mask * torch.arange(mask.shape[1])).argmax(dim=1)
    rewards[torch.arange(len(scores)), last] += scores.to(rewards.dtype)
    return rewards


def grpo_advantages(scores: Tensor, mask: Tensor, group_size: int) -> Tensor:
    """Group-relative advantages on every response token, ``[B, T]``.

    Raises:
        ValueError: ``group_size`` does not divide the batch.
    """
    if group_size < 1 or len(scores) % group_size:
        raise ValueError(f"group_size must divide the batch of {len(scores)}, got {group_size}")
    g = scores.float().view(-1, group_size)
    std = g.std(dim=1, keepdim=True) if group_size > 1 else torch.ones_like(g[:, :1])
    rel = ((g - g.mean(dim=1, keepdim=True)) / (std + 1e-6)).view(-1)
    return rel[:, None] * mask.float()


def varied_groups(rewards: Tensor, group_size: int) -> Tensor:
    """``[B]`` bool: the rows of the prompt groups (``group_size`` consecutive rows) whose
    rewards are not all equal: DAPO's dynamic-sampling filter (veRL ``filter_groups``).

    A group whose rewards do not vary has GRPO advantages of zero: it adds nothing to the
    policy gradient but its tokens to the loss's denominators, shrinking every other
    record's step. The round then trains on the shrunken batch; it is not refilled with more
    generated groups as veRL can (up to ``max_num_gen_batches`` tries), so every algorithm
    compared generates the same records per round and the filter's cost is only what it
    saves; how much it shrinks the batch is in each round's ``groups_dropped``.

    Raises:
        ValueError: ``group_size`` does not divide the batch.
    """
    if group_size < 1 or len(rewards) % group_size:
        raise ValueError(f"group_size must divide the batch of {len(rewards)}, got {group_size}")
    g = rewards.view(-1, group_size)
    varies = (g != g[:, :1]).any(dim=1)
    return varies.repeat_interleave(group_size)


def whiten(values: Tensor, mask: Tensor) -> Tensor:
    """Zero mean, unit variance over the masked entries (PPO's advantage normalisation)."""
    m = mask.float()
    n = m.sum().clamp(min=1)
    mean = (values * m).sum() / n
    var = (((values - mean) * m) ** 2).sum() / (n - 1).clamp(min=1)
    return (values - mean) * torch.rsqrt(var + 1e-8) * m


def whiten_chunks(values: Tensor, mask: Tensor, chunk: int = 0) -> Tensor:
    """:func:`whiten` over each ``chunk`` consecutive rows (the last chunk may be shorter),
    or over all rows when ``chunk`` is 0: the paper's code whitens the validation
    responses' advantages in the 64-sequence batches it generates them in."""
    if not chunk or chunk >= len(values):
        return whiten(values, mask)
    return torch.cat([whiten(values[i:i + chunk], mask[i:i + chunk])
                      for i in range(0, len(values), chunk)])


@dataclass
class AdaptiveKL:
    """Ziegler et al.'s controller: ``beta`` moves toward the KL ``target`` per ``horizon``
    steps, by at most 20% of the gap per update."""

    beta: float = 0.1
    target: float = 6.0
    horizon: float = 10_000.0

    def update(self, kl: float, n_steps: int) -> float:
        error = max(-0.2, min(0.2, kl / self.target - 1.0))
        self.beta *= 1.0 + error * n_steps / self.horizon
        return self.beta


def advantages(spec: LMRunSpec, batch: SequenceBatch, rewards: torch.Tensor,
               prepared: tuple[torch.Tensor, ...], beta: float
               ) -> tuple[SequenceBatch, ValueTargets | None, float]:
    """The round's advantages over the whole batch (every group complete), and the mean KL."""
    return estimate(spec.update.estimator, spec.group_size, batch, rewards, prepared, beta)


def estimate(estimator: str, group_size: int, batch: SequenceBatch, rewards: torch.Tensor,
             prepared: tuple[torch.Tensor, ...], beta: float, *, whiten_chunk: int = 0
             ) -> tuple[SequenceBatch, ValueTargets | None, float]:
    """:func:`advantages` by ``estimator`` ("ppo": GAE on KL-penalised rewards, whitened
    over the batch, or over each ``whiten_chunk`` consecutive rows; "grpo": relative to each
    group of ``group_size``), without a spec to build."""
    old, ref, values = prepared
    mask = batch.response_mask
    kl = float(((old - ref) * mask).sum() / mask.sum().clamp(min=1))
    if estimator == "ppo":
        adv, returns = gae(kl_penalised_rewards(rewards, old, ref, mask, beta), values, mask)
        adv, targets = whiten_chunks(adv, mask, whiten_chunk), ValueTargets(values, returns)
    else:
        adv, targets = grpo_advantages(rewards, mask, group_size), None
    # The value targets travel with the rows too: the scores' per-record loss has the
    # update's value term.
    full = SequenceBatch(batch.input_ids, batch.attention_mask, mask, old_logp=old,
                         advantages=adv, ref_logp=ref,
                         old_values=None if targets is None else targets.values,
                         returns=None if targets is None else targets.returns)
    return full, targets, kl


def validation_weights(spec: LMRunSpec, batch: SequenceBatch, rewards: torch.Tensor,
                       prepared: tuple[torch.Tensor, ...], beta: float) -> torch.Tensor:
    """The target's per-token weights on fresh validation responses (one per prompt):
    ``seq-return`` weighs each by its last-token advantage (PPO's GAE, as the paper's
    f^seq does), any other target by its raw reward.

    Each response's weight is centred on the validation mean (a baseline). On-policy
    log-likelihood gradients average to zero, so a constant part of the weights adds only
    noise to the target's gradient, never direction; without the baseline that noise is
    most of the target whenever the value head does not yet predict the reward's level (the
    first rounds: it starts at zero, and detox-mini's rewards are all near +5).
    """
    if spec.target != "seq-return":
        return target_weights("reward", batch, rewards - rewards.mean())
    # PPO's GAE on single responses, whatever the run's estimator; not a spec of its own (one
    # with group_size 1 would fail the spec's batch checks).
    full, _, _ = estimate("ppo", 1, batch, rewards, prepared, beta,
                          whiten_chunk=spec.target_whiten_chunk)
    last = last_token_advantage(full)
    return target_weights("seq-return", batch, last - last.mean())


def last_token_advantage(batch: SequenceBatch) -> torch.Tensor:
    """Each row's advantage at its last response token (the paper's f^seq weight)."""
    mask = batch.response_mask
    last = (mask * torch.arange(mask.shape[1])).argmax(dim=1)
    return batch.advantages[torch.arange(mask.shape[0]), last]
