"""Paired Monte-Carlo evaluation: the same seeds for every policy, every episode completed."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from iif_ray.attribution import FunctionalPolicy, make_distribution
from iif_ray.envs import make_env
from iif_ray.evaluation import PolicySampler, episode_seeds, rollout_returns


def _sampler(seed, obs_dim=6, n_actions=3):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(obs_dim, 16), nn.Tanh(), nn.Linear(16, n_actions))
    return PolicySampler(FunctionalPolicy(net, make_distribution("categorical")))


class RecordingEnv(gym.Wrapper):
    """Acrobot that records the seed of every reset and every episode's end."""

    log: list = []

    def reset(self, *, seed=None, options=None):
        RecordingEnv.log.append(("reset", seed))
        return super().reset(seed=seed, options=options)

    def step(self, action):
        out = super().step(action)
        if out[2] or out[3]:
            RecordingEnv.log.append(("end", None))
        return out


def test_every_started_episode_completes_and_seeds_are_the_list():
    RecordingEnv.log = []
    seeds = episode_seeds(37)
    res = rollout_returns(lambda: RecordingEnv(make_env("Acrobot-v1")), _sampler(0), seeds,
                          batch=8)
    resets = [s for kind, s in RecordingEnv.log if kind == "reset"]
    ends = [kind for kind, _ in RecordingEnv.log if kind == "end"]
    assert sorted(resets) == list(seeds)  # exactly the list, each once
    assert len(ends) == len(seeds)  # every started episode ran to its end
    assert (res.lengths > 0).all() and (res.lengths <= 500).all()
    assert np.array_equal(res.seeds, seeds)


def test_identical_seeds_give_identical_episodes_whatever_the_batch():
    """Results are a function of (policy, seed) only: batch layout and order do not matter,
    so two algorithms evaluated on the same list meet the same episodes."""
    env = lambda: make_env("Acrobot-v1")  # noqa: E731
    a = rollout_returns(env, _sampler(1), episode_seeds(12), batch=12)
    b = rollout_returns(env, _sampler(1), episode_seeds(12), batch=5)
    assert np.array_equal(a.returns, b.returns) and np.array_equal(a.lengths, b.lengths)


def _table_policy(probs: np.ndarray) -> PolicySampler:
    """A policy on one-hot states whose action probabilities are exactly ``probs``."""
    net = nn.Linear(probs.shape[0], probs.shape[1], bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.as_tensor(np.log(probs).T, dtype=torch.float32))
    return PolicySampler(FunctionalPolicy(net, make_distribution("categorical")))


def test_common_random_numbers_pair_the_difference():
    """Two nearby policies on slippery FrozenLake: on the same seeds the paired difference
    has a much smaller spread than on independent seeds (common random numbers work)."""
    kwargs = {"map_name": "4x4", "is_slippery": True}
    env = lambda: make_env("FrozenLake-v1", {"kwargs": kwargs})  # noqa: E731
    safe = np.full((16, 4), 0.25)
    for state, action in {0: 0, 4: 0, 8: 3, 9: 1, 10: 0, 13: 2, 14: 1}.items():
        safe[state] = np.eye(4)[action]
    p = _table_policy(0.8 * safe + 0.2 * 0.25)
    q = _table_policy(0.79 * safe + 0.21 * 0.25)
    same = episode_seeds(400)
    rp = rollout_returns(env, p, same).returns
    rq = rollout_returns(env, q, same).returns
    rq_other = rollout_returns(env, q, episode_seeds(400, base=5_000_000)).returns
    assert rp.mean() > 0.05  # the episodes are informative (some reach the goal)
    assert np.std(rp - rq) < 0.6 * np.std(rp - rq_other)


def test_gaussian_policy_uses_inverse_cdf_noise():
    net = nn.Linear(3, 2)  # mean | log_std for a 1-D action
    sampler = PolicySampler(FunctionalPolicy(net, make_distribution("diag_gaussian")))
    obs = np.zeros((4, 3), dtype=np.float32)
    with torch.no_grad():
        net.weight.zero_()
        net.bias.copy_(torch.tensor([1.0, np.log(2.0)]))
    u = np.array([[0.5], [0.8413447460685429], [0.15865525393145707], [0.5]])
    assert sampler.action_size(obs) == 1
    np.testing.assert_allclose(sampler.actions(obs, u).ravel(), [1.0, 3.0, -1.0, 1.0],
                               atol=1e-5)


def test_bad_episode_count():
    with pytest.raises(ValueError, match="episodes must be >= 1, got 0"):
        episode_seeds(0)
