"""Environment creation: validated ids, observation wrappers, RLlib registration.

Any gymnasium id works. Observations are adapted so RLlib's default encoders and the
attribution code (which needs one tensor per observation) can use them:

* ``Discrete`` observations become one-hot vectors (FrozenLake);
* MiniGrid's dict observation becomes its image, as float32 scaled by ``1/255`` (what the
  paper's Stable-Baselines3 ``CnnPolicy`` sees);
* 2-D arrays (highway-env's kinematics table) are flattened.

Environments are registered with Ray under ``iif/<gym id>`` (:data:`PREFIX`) so remote
EnvRunners on any node can build them; the registration lives with the RLlib code
(:mod:`iif_ray.rllib.env_registration`), so this module needs only gymnasium.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any

import gymnasium as gym
import numpy as np

PREFIX = "iif/"
# Packages whose import registers extra gymnasium ids, keyed by id prefix.
_ENV_PACKAGES = {"MiniGrid-": "minigrid", "BabyAI-": "minigrid", "highway": "highway_env",
                 "merge": "highway_env", "roundabout": "highway_env",
                 "intersection": "highway_env", "parking": "highway_env",
                 "racetrack": "highway_env", "exit": "highway_env", "two-way": "highway_env",
                 "u-turn": "highway_env", "lane-keeping": "highway_env"}


class UnknownEnvironmentError(ValueError):
    pass


def _import_env_package(env_id: str) -> None:
    for prefix, package in _ENV_PACKAGES.items():
        if env_id.startswith(prefix):
            importlib.import_module(package)


def check_env_id(env_id: str) -> str:
    """Return ``env_id`` if gymnasium knows it, else raise with close matches."""
    if not isinstance(env_id, str) or not env_id:
        raise UnknownEnvironmentError(f"environment id must be a non-empty string, got {env_id!r}")
    env_id = env_id.removeprefix(PREFIX)
    _import_env_package(env_id)
    try:
        gym.spec(env_id)
    except gym.error.Error:
        for package in sorted(set(_ENV_PACKAGES.values())):
            importlib.import_module(package)
        close = difflib.get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownEnvironmentError(
            f"unknown environment {env_id!r}: not a registered gymnasium id{hint}"
        ) from None
    return env_id


class OneHotObservation(gym.ObservationWrapper):
    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self._n = int(env.observation_space.n)
        self.observation_space = gym.spaces.Box(0.0, 1.0, (self._n,), np.float32)

    def observation(self, observation: Any) -> np.ndarray:
        out = np.zeros(self._n, dtype=np.float32)
        out[int(observation)] = 1.0
        return out


class ScaledImageObservation(gym.ObservationWrapper):
    """Pick the ``image`` entry of a dict observation and scale it to float32."""

    def __init__(self, env: gym.Env, scale: float = 1.0 / 255.0) -> None:
        super().__init__(env)
        space = env.observation_space["image"]
        self._scale = np.float32(scale)
        self.observation_space = gym.spaces.Box(
            0.0, float(space.high.max()) * float(scale), space.shape, np.float32)

    def observation(self, observation: dict) -> np.ndarray:
        return observation["image"].astype(np.float32) * self._scale


class FlatFloatObservation(gym.ObservationWrapper):
    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        space = env.observation_space
        self.observation_space = gym.spaces.Box(
            space.low.reshape(-1).astype(np.float32), space.high.reshape(-1).astype(np.float32),
            dtype=np.float32)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return np.asarray(observation, dtype=np.float32).reshape(-1)


def adapt_observations(env: gym.Env, image_scale: float = 1.0 / 255.0) -> gym.Env:
    space = env.observation_space
    if isinstance(space, gym.spaces.Discrete):
        return OneHotObservation(env)
    if isinstance(space, gym.spaces.Dict) and "image" in space.spaces:
        return ScaledImageObservation(env, image_scale)
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 2:
        return FlatFloatObservation(env)
    if isinstance(space, gym.spaces.Box) and space.dtype == np.float64:
        return FlatFloatObservation(env) if len(space.shape) == 1 else env
    return env


# Episodes of an env registered without a time limit (CliffWalking, say) may never end, and a
# PPO round would then report no return at all; such envs get this limit.
DEFAULT_MAX_EPISODE_STEPS = 1000


def time_limit(env_id: str, kwargs: dict | None = None) -> int:
    """The episode step limit :func:`make_env` applies: the caller's ``max_episode_steps``,
    the env's registered one, or :data:`DEFAULT_MAX_EPISODE_STEPS`."""
    kwargs = dict(kwargs or {})
    if kwargs.get("max_episode_steps"):
        return int(kwargs["max_episode_steps"])
    registered = gym.spec(check_env_id(env_id)).max_episode_steps
    return int(registered) if registered else DEFAULT_MAX_EPISODE_STEPS


def make_env(env_id: str, env_config: dict | None = None) -> gym.Env:
    """``gym.make(env_id, **kwargs)`` plus observation adaptation and a time limit.

    ``env_config`` keys: ``kwargs`` (passed to ``gym.make``; highway-env takes its settings
    as ``kwargs={"config": {...}}``) and ``image_scale``.
    """
    cfg = dict(env_config or {})
    env_id = check_env_id(env_id)
    kwargs = dict(cfg.get("kwargs") or {})
    if gym.spec(env_id).max_episode_steps is None:
        kwargs["max_episode_steps"] = time_limit(env_id, kwargs)
    env = gym.make(env_id, **kwargs)
    return adapt_observations(env, float(cfg.get("image_scale", 1.0 / 255.0)))


def spaces(env_id: str, kwargs: dict | None = None) -> tuple[gym.Space, gym.Space]:
    """The (adapted) observation space and the action space, from a throwaway instance."""
    env = make_env(env_id, {"kwargs": kwargs or {}})
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()


# The (adapted) observations the models take: float vectors (the MLP) and MiniGrid-sized
# 7x7xC images (the MiniGrid preset's CNN).
CNN_IMAGE = (7, 7)
ACCEPTED_OBSERVATIONS = ("a float Box vector (Discrete observations are one-hot encoded, 2-D "
                         "tables flattened) or a 7x7xC image (MiniGrid's agent view)")


def check_observation_space(env_id: str, space: gym.Space) -> None:
    """Refuse, before Ray starts, an (adapted) observation space no model here takes.

    A Tuple or Dict observation, or a raw uint8 image, would otherwise fail inside RLlib's
    model catalog on a worker, after the run directory was written.

    Raises:
        ValueError: the space, named with what is accepted.
    """
    ok = (isinstance(space, gym.spaces.Box) and np.issubdtype(space.dtype, np.floating)
          and (len(space.shape) == 1 or (len(space.shape) == 3
                                         and tuple(space.shape[:2]) == CNN_IMAGE)))
    if not ok:
        raise ValueError(f"{env_id} has observations {space}, which no model here takes; "
                         f"accepted: {ACCEPTED_OBSERVATIONS}")
