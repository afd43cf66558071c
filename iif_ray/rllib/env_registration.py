"""Environments as RLlib sees them: registered by name, and their action-space kind.

Environments are registered with Ray Tune's registry under ``iif/<gym id>``, so EnvRunners on
any node (and a restored checkpoint in a fresh process) can build them by name.
"""

from __future__ import annotations

import json
from typing import Any

import gymnasium as gym
from ray.rllib.utils.spaces.space_utils import flatten_space
from ray.tune.registry import register_env

from iif_ray.envs import PREFIX, check_env_id, make_env

_CONTINUOUS_ACTIONS: dict[tuple[str, str], bool] = {}


def has_continuous_actions(env_id: str, env_kwargs: dict | None = None) -> bool:
    """Whether the env's action space holds a ``Box`` anywhere.

    Only then do RLlib's action normalisation and clipping change an action; for discrete
    spaces they are a per-step copy and tree walk that cost sampling time and nothing else.
    Cached per env, since making some envs (highway-env) takes about a second.
    """
    key = (env_id, json.dumps(env_kwargs or {}, sort_keys=True, default=repr))
    if key not in _CONTINUOUS_ACTIONS:
        env = make_env(env_id, {"kwargs": env_kwargs or {}})
        try:
            leaves = flatten_space(env.action_space)
        finally:
            env.close()
        _CONTINUOUS_ACTIONS[key] = any(isinstance(sp, gym.spaces.Box) for sp in leaves)
    return _CONTINUOUS_ACTIONS[key]


def registered_name(env_id: str) -> str:
    """Register ``iif/<env_id>`` with Ray Tune's registry and return that name."""
    env_id = check_env_id(env_id)
    name = PREFIX + env_id
    register_env(name, lambda env_config, _id=env_id: make_env(_id, dict(env_config or {})))
    return name


def ensure_registered(env: Any) -> None:
    """Re-register an ``iif/...`` env in a fresh process (e.g. restoring a checkpoint)."""
    if isinstance(env, str) and env.startswith(PREFIX):
        registered_name(env)
