"""The exact evaluator against Monte-Carlo rollouts of the same policies (an independent oracle:
the real environment stepped episode by episode)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from iif_ray.attribution import FunctionalPolicy, make_distribution
from iif_ray.envs import make_env
from iif_ray.evaluation import (
    PolicySampler,
    episode_seeds,
    expected_return,
    finite_mdp,
    rollout_returns,
    supports_exact,
)


def _policy(obs_shape, n_actions, *, seed, scale=3.0, forward_bias=0.0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(obs_shape)), n_actions))
    with torch.no_grad():
        net[1].weight.mul_(scale)
        if forward_bias:
            net[1].bias[2] += forward_bias  # MiniGrid's "forward"
    return PolicySampler(FunctionalPolicy(net, make_distribution("categorical")))


FROZEN = [("FrozenLake-v1", {"map_name": "4x4", "is_slippery": False}),
          ("FrozenLake-v1", {"map_name": "4x4", "is_slippery": True})]


@pytest.mark.parametrize(("env_id", "kwargs"), FROZEN)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_frozenlake_exact_matches_monte_carlo(env_id, kwargs, seed):
    mdp = finite_mdp(env_id, kwargs)
    assert mdp.horizon == 100 and mdp.obs.shape == (16, 16)
    sampler = _policy((16,), 4, seed=seed, scale=4.0)
    exact = expected_return(mdp, sampler.probabilities)
    mc = rollout_returns(lambda: make_env(env_id, {"kwargs": kwargs}), sampler,
                         episode_seeds(3000), batch=100)
    assert abs(mc.mean - exact) <= 3 * max(mc.se, 1e-3), (exact, mc.mean, mc.se)


def test_frozenlake_greedy_path_is_one():
    """A policy that always walks the known safe path reaches the goal: exact return 1."""
    kwargs = {"map_name": "4x4", "is_slippery": False}
    mdp = finite_mdp("FrozenLake-v1", kwargs)
    # Safe path on the 4x4 map: down, down, right, right, down, right (0=L 1=D 2=R 3=U).
    best = {0: 1, 4: 1, 8: 2, 9: 2, 10: 1, 14: 2}
    probs = np.full((16, 4), 0.25)
    for s, a in best.items():
        probs[s] = np.eye(4)[a]
    assert expected_return(mdp, lambda obs: probs) == pytest.approx(1.0)
    # Uniform policy: below 1 and above 0, a different number.
    uniform = expected_return(mdp, lambda obs: np.full((len(obs), 4), 0.25))
    assert 0 < uniform < 0.1


@pytest.mark.parametrize(("seed", "bias"), [(0, 2.5), (3, 1.0)])
@pytest.mark.slow
def test_minigrid_exact_matches_monte_carlo(seed, bias):
    env_id = "MiniGrid-Empty-8x8-v0"
    mdp = finite_mdp(env_id)
    assert mdp.horizon == 256 and mdp.reward.ndim == 3  # the reward depends on the step
    sampler = _policy(mdp.obs.shape[1:], 7, seed=seed, scale=3.0, forward_bias=bias)
    exact = expected_return(mdp, sampler.probabilities)
    mc = rollout_returns(lambda: make_env(env_id), sampler, episode_seeds(400), batch=100)
    assert 0 < exact < 1
    assert abs(mc.mean - exact) <= 3 * mc.se, (exact, mc.mean, mc.se)


def test_minigrid_shortest_path_reward():
    """The shortest path (11 steps) gives 1 - 0.9 * 11/256 exactly."""
    mdp = finite_mdp("MiniGrid-Empty-8x8-v0")
    env = make_env("MiniGrid-Empty-8x8-v0")
    env.reset(seed=0)
    # From (1,1) facing east: 5 forwards to (6,1), turn right, 5 forwards into the goal at
    # (6,6): the 11th step.
    base = env.unwrapped
    cells = [(x, y) for x in range(base.width) for y in range(base.height)
             if base.grid.get(x, y) is None]
    states = [(c, d) for c in cells for d in range(4)]
    probs = np.zeros((len(states), 7))
    for i, ((x, _), d) in enumerate(states):
        want = 0 if x < 6 else 1  # east (0) until the last column, then south (1)
        probs[i, 2 if d == want else 1] = 1.0  # forward, else turn right
    assert len(states) == len(mdp.obs)
    assert expected_return(mdp, lambda obs: probs) == pytest.approx(1 - 0.9 * 11 / 256)


def test_unsupported_env_is_refused():
    assert not supports_exact("CartPole-v1")
    with pytest.raises(ValueError, match="no exact model for 'CartPole-v1'"):
        finite_mdp("CartPole-v1")
