"""Advantages for LM rounds, computed on the driver over the *whole* batch, before any row is
dropped (veRL PR 6375: rows masked before the baseline leaked into GRPO's group statistics).

* PPO (value head): per-token rewards ``-beta * (logp - ref_logp)`` plus the sequence reward on
  the last response token, GAE over response tokens (gamma 1, lambda 0.95 by default), as in
  TRL's and veRL's PPO; ``beta`` follows the adaptive KL controller of Ziegler et al. (2019).
* GRPO: each sequence's reward minus its group's mean, over the group's standard deviation,
  on every response token; the KL term then lives in the loss (``PolicyLoss.kl_coef``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


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


def whiten(values: Tensor, mask: Tensor) -> Tensor:
    """Zero mean, unit variance over the masked entries (PPO's advantage normalisation)."""
    m = mask.float()
    n = m.sum().clamp(min=1)
    mean = (values * m).sum() / n
    var = (((values - mean) * m) ** 2).sum() / (n - 1).clamp(min=1)
    return (values - mean) * torch.rsqrt(var + 1e-8) * m


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
