"""Exact expected episode return of a stochastic policy on a finite MDP, by dynamic programming.

The evaluation return of a benchmark is the undiscounted return of one episode, which ends when
the environment terminates or its step limit truncates it. For a finite MDP this expectation is
a backward recursion over remaining steps, with no sampling at all::

    V_H(s) = 0
    V_t(s) = sum_a pi(a|s) [ R_t(s, a) + sum_s' P(s'|s, a) V_{t+1}(s') ]
    J      = sum_s mu(s) V_0(s)

where ``P`` holds only the continuing mass (terminating transitions lead nowhere), ``H`` is the
step limit and ``R_t`` may depend on the step count (MiniGrid's success reward does).

Two environment families are supported, both read from the environment itself so the model
cannot drift from what training sees:

* **FrozenLake** (any map, slippery or not): the transition table ``env.unwrapped.P`` and the
  initial-state distribution ``isd``.
* **MiniGrid** grids with fixed layout and start (``MiniGrid-Empty-*``): every agent cell x
  direction is enumerated; observations come from the env's ``gen_obs`` and transitions from
  its ``step``, and the step-count-dependent reward from ``step`` at every step count.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from iif_ray.envs import make_env, time_limit


@dataclass(frozen=True)
class FiniteMDP:
    """A finite-horizon MDP as the policy sees it.

    obs: ``[S, ...]`` the (adapted) observation of each state.
    start: ``[S]`` initial-state distribution.
    trans: ``[S, A, S]`` probability of *continuing* into each state.
    reward: ``[S, A]`` expected reward, or ``[H, S, A]`` when it depends on the step.
    horizon: steps before truncation.
    """

    obs: np.ndarray
    start: np.ndarray
    trans: np.ndarray
    reward: np.ndarray
    horizon: int

    def reward_at(self, t: int) -> np.ndarray:
        return self.reward[t] if self.reward.ndim == 3 else self.reward


def expected_return(mdp: FiniteMDP, probabilities: Callable[[np.ndarray], np.ndarray]) -> float:
    """The policy's exact expected undiscounted episode return.

    Args:
        mdp: the environment's finite model.
        probabilities: maps observations ``[S, ...]`` to action probabilities ``[S, A]``.
    """
    pi = np.asarray(probabilities(mdp.obs), dtype=np.float64)
    value = np.zeros(len(mdp.start))
    for t in reversed(range(mdp.horizon)):
        q = mdp.reward_at(t) + mdp.trans @ value
        value = (pi * q).sum(axis=1)
    return float(mdp.start @ value)


def _observe(env: gym.Env, raw_obs) -> np.ndarray:
    """Apply the env's outermost observation adaptation (see :func:`iif_ray.envs.make_env`)."""
    if isinstance(env, gym.ObservationWrapper):
        return np.asarray(env.observation(raw_obs), dtype=np.float32)
    return np.asarray(raw_obs, dtype=np.float32)


def _frozenlake(env: gym.Env, horizon: int) -> FiniteMDP:
    base = env.unwrapped
    n_s, n_a = int(base.observation_space.n), int(base.action_space.n)
    trans = np.zeros((n_s, n_a, n_s))
    reward = np.zeros((n_s, n_a))
    for s in range(n_s):
        for a in range(n_a):
            for prob, s_next, r, terminated in base.P[s][a]:
                reward[s, a] += prob * r
                if not terminated:
                    trans[s, a, s_next] += prob
    obs = np.stack([_observe(env, s) for s in range(n_s)])
    return FiniteMDP(obs, np.asarray(base.initial_state_distrib, dtype=np.float64), trans,
                     reward, horizon)


def _minigrid(env: gym.Env, horizon: int, seed: int) -> FiniteMDP:
    env.reset(seed=seed)
    base = env.unwrapped
    start_state = (tuple(int(v) for v in base.agent_pos), int(base.agent_dir))
    cells = [(x, y) for x in range(base.width) for y in range(base.height)
             if base.grid.get(x, y) is None]
    states = [(c, d) for c in cells for d in range(4)]
    index = {s: i for i, s in enumerate(states)}
    n_s, n_a = len(states), int(base.action_space.n)
    horizon = min(horizon, int(base.max_steps))

    def put(state, step_count: int) -> None:
        base.agent_pos, base.agent_dir = state[0], state[1]
        base.step_count = step_count

    obs = []
    for s in states:
        put(s, 0)
        obs.append(_observe(env, base.gen_obs()))
    trans = np.zeros((n_s, n_a, n_s))
    reward = np.zeros((horizon, n_s, n_a))
    for i, s in enumerate(states):
        for a in range(n_a):
            put(s, 0)
            _, r, terminated, _, _ = base.step(a)
            if not terminated:
                trans[i, a, index[(tuple(int(v) for v in base.agent_pos), int(base.agent_dir))]] = 1
            if r == 0 and not terminated:
                continue
            for t in range(horizon):  # the reward depends on how many steps were used
                put(s, t)
                _, reward[t, i, a], _, _, _ = base.step(a)
    if (trans.sum(axis=2) > 1).any() or start_state not in index:
        raise ValueError("MiniGrid layout is not static (objects move or the start is blocked)")
    start = np.zeros(n_s)
    start[index[start_state]] = 1.0
    return FiniteMDP(np.stack(obs), start, trans, reward, horizon)


def supports_exact(env_id: str) -> bool:
    """Whether :func:`finite_mdp` can model ``env_id``."""
    return env_id.startswith("FrozenLake") or env_id.startswith("MiniGrid-Empty-")


def finite_mdp(env_id: str, env_kwargs: dict | None = None, *, seed: int = 0) -> FiniteMDP:
    """The finite model of ``env_id`` as :func:`iif_ray.envs.make_env` builds it.

    The horizon is the step limit training uses; MiniGrid's own ``max_steps`` caps it.
    ``seed`` only picks the layout of MiniGrid envs (Empty's is the same for every seed).

    Raises:
        ValueError: not a supported environment family.
    """
    if not supports_exact(env_id):
        raise ValueError(f"no exact model for {env_id!r}; supported: FrozenLake-*, "
                         "MiniGrid-Empty-*")
    env = make_env(env_id, {"kwargs": dict(env_kwargs or {})})
    horizon = time_limit(env_id, env_kwargs)
    try:
        if env_id.startswith("FrozenLake"):
            return _frozenlake(env, horizon)
        return _minigrid(env, horizon, seed)
    finally:
        env.close()
