"""Paired, unbiased Monte-Carlo evaluation: a fixed list of seeded episodes, each run to its end.

Unbiased: every episode that starts is finished, whatever its length. Keeping "the first N
episodes to finish" on parallel environments would over-sample short episodes (in
LunarLander, crashes). Paired: episode ``i`` resets its environment with ``seeds[i]`` and draws
its action noise from a generator seeded with ``seeds[i]``, so every algorithm and training
seed is evaluated on the same starts and the same random draws (common random numbers).

Episodes run in a batch of environments stepped together, so the policy runs once per step for
the whole batch; a finished episode's environment starts the next seed at once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from iif_ray.evaluation.sampler import PolicySampler

# Evaluation episode seeds start here, far from the seeds training runs use (0, 1, 2, ...).
EVAL_SEED_BASE = 1_000_000


def episode_seeds(n: int, base: int = EVAL_SEED_BASE) -> np.ndarray:
    """The first ``n`` evaluation seeds: the same list for every algorithm and training seed.

    Raises:
        ValueError: ``n`` < 1.
    """
    if n < 1:
        raise ValueError(f"episodes must be >= 1, got {n}")
    return np.arange(base, base + n, dtype=np.int64)


@dataclass(frozen=True)
class EpisodeReturns:
    """Per-episode results, in the order of ``seeds``."""

    seeds: np.ndarray
    returns: np.ndarray
    lengths: np.ndarray
    seconds: float

    @property
    def mean(self) -> float:
        return float(self.returns.mean())

    @property
    def se(self) -> float:
        return standard_error(self.returns)


def standard_error(values: np.ndarray) -> float:
    """Standard error of the mean (0 for a single value)."""
    n = len(values)
    return float(np.std(values, ddof=1) / math.sqrt(n)) if n > 1 else 0.0


def rollout_returns(make_env: Callable[[], gym.Env], sampler: PolicySampler,
                    seeds: Sequence[int], *, batch: int = 64) -> EpisodeReturns:
    """Run one complete episode per seed with the stochastic policy; undiscounted returns.

    Args:
        make_env: builds one environment (with its time limit, so every episode ends).
        sampler: the policy.
        seeds: episode seeds; episode ``i`` resets with ``seeds[i]`` and samples its actions
            from ``numpy.random.default_rng(seeds[i])``.
        batch: environments stepped together.
    """
    t0 = time.perf_counter()
    seeds = np.asarray(seeds, dtype=np.int64)
    n = len(seeds)
    returns = np.zeros(n)
    lengths = np.zeros(n, dtype=np.int64)
    envs = [make_env() for _ in range(min(batch, n))]
    slot_episode = [-1] * len(envs)
    slot_obs: list = [None] * len(envs)
    rngs: list = [None] * len(envs)
    next_episode = 0

    def start(slot: int) -> None:
        nonlocal next_episode
        if next_episode >= n:
            slot_episode[slot] = -1
            return
        i = next_episode
        next_episode += 1
        slot_episode[slot] = i
        slot_obs[slot], _ = envs[slot].reset(seed=int(seeds[i]))
        rngs[slot] = np.random.default_rng(int(seeds[i]))

    for slot in range(len(envs)):
        start(slot)
    width = None
    try:
        while True:
            active = [s for s, i in enumerate(slot_episode) if i >= 0]
            if not active:
                break
            obs = np.stack([slot_obs[s] for s in active])
            if width is None:
                width = sampler.action_size(obs)
            noise = np.stack([rngs[s].random(width) for s in active])
            actions = sampler.actions(obs, noise)
            for row, s in enumerate(active):
                obs_s, reward, terminated, truncated, _ = envs[s].step(actions[row])
                i = slot_episode[s]
                returns[i] += float(reward)
                lengths[i] += 1
                slot_obs[s] = obs_s
                if terminated or truncated:
                    start(s)
    finally:
        for env in envs:
            env.close()
    return EpisodeReturns(seeds, returns, lengths, time.perf_counter() - t0)
