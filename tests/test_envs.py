"""Observation wrappers and env creation: what RLlib's encoders and the attribution code see."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from iif_ray.envs import (
    FlatFloatObservation,
    OneHotObservation,
    ScaledImageObservation,
    UnknownEnvironmentError,
    adapt_observations,
    check_env_id,
    make_env,
)


class RecordRaw(gym.Wrapper):
    """Keeps the last raw observation the inner env produced, before any outer wrapper."""

    last: Any = None

    def reset(self, **kwargs: Any) -> tuple[Any, dict]:
        obs, info = self.env.reset(**kwargs)
        self.last = obs
        return obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        obs, *rest = self.env.step(action)
        self.last = obs
        return (obs, *rest)


class GridBoxEnv(gym.Env):
    """A tiny env with a 2-D float64 ``Box`` observation and distinct finite bounds."""

    def __init__(self) -> None:
        low = np.arange(6, dtype=np.float64).reshape(2, 3) - 10.0
        self.observation_space = gym.spaces.Box(low, low + 20.0, (2, 3), np.float64)
        self.action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: dict | None = None
              ) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        return self.observation_space.sample(), 1.0, False, False, {}


def test_one_hot_marks_the_raw_state_on_frozen_lake() -> None:
    """The one-hot index must be the env's state, after reset and after every step."""
    wrapped = OneHotObservation(gym.make("FrozenLake-v1"))
    raw = gym.make("FrozenLake-v1")  # slippery: the seed drives the transitions
    space = wrapped.observation_space
    assert isinstance(space, gym.spaces.Box)
    assert space.shape == (16,) and space.dtype == np.float32
    assert (space.low == 0).all() and (space.high == 1).all()

    obs, _ = wrapped.reset(seed=3)
    state, _ = raw.reset(seed=3)
    states = [int(state)]
    for step in range(30):
        assert obs.dtype == np.float32 and obs.shape == (16,)
        assert space.contains(obs)
        assert obs.sum() == 1.0 and int(obs.argmax()) == int(state)
        action = step % 4
        obs, _, term, trunc, _ = wrapped.step(action)
        state, _, raw_term, raw_trunc, _ = raw.step(action)
        assert (term, trunc) == (raw_term, raw_trunc)
        states.append(int(state))
        if term or trunc:
            obs, _ = wrapped.reset(seed=step)
            state, _ = raw.reset(seed=step)
    assert len(set(states)) > 1  # the agent actually moved, so the check saw several states


def test_scaled_image_is_the_raw_image_over_255_on_minigrid() -> None:
    """The paper's CNN sees float32 images in [0, 1]; the mission string must be gone."""
    import minigrid  # noqa: F401  (registers the MiniGrid ids)

    inner = RecordRaw(gym.make("MiniGrid-Empty-8x8-v0"))
    env = ScaledImageObservation(inner)
    raw_space = inner.observation_space["image"]
    space = env.observation_space
    assert isinstance(space, gym.spaces.Box)
    assert space.shape == raw_space.shape == (7, 7, 3) and space.dtype == np.float32
    assert (space.low == 0).all()
    np.testing.assert_allclose(space.high, raw_space.high.max() / 255.0)

    obs, _ = env.reset(seed=0)
    for action in [None, 2, 1, 2, 0]:
        if action is not None:
            obs, *_ = env.step(action)
        raw_image = inner.last["image"]
        assert obs.dtype == np.float32 and obs.shape == (7, 7, 3)
        assert space.contains(obs)
        np.testing.assert_array_equal(obs, raw_image.astype(np.float32) * np.float32(1 / 255))
        np.testing.assert_allclose(obs * 255.0, raw_image, atol=1e-4)
    assert raw_image.any()  # a real image, not an all-zero one


def test_flat_float_is_the_raw_table_flattened_on_highway() -> None:
    """highway-env's kinematics table reaches the MLP as one float32 vector, row-major."""
    import highway_env  # noqa: F401  (registers the highway ids)

    inner = RecordRaw(gym.make("highway-v0"))
    env = FlatFloatObservation(inner)
    rows, cols = inner.observation_space.shape
    assert env.observation_space.shape == (rows * cols,)
    assert env.observation_space.dtype == np.float32
    obs, _ = env.reset(seed=0)
    for action in [None, 1]:
        if action is not None:
            obs, *_ = env.step(action)
        assert obs.dtype == np.float32
        np.testing.assert_array_equal(obs, np.asarray(inner.last, np.float32).reshape(-1))
        assert np.abs(obs).sum() > 0


def test_flat_float_keeps_each_entry_bounds() -> None:
    """Bounds are flattened in the same order as the observations, entry by entry."""
    inner = RecordRaw(GridBoxEnv())
    env = FlatFloatObservation(inner)
    space = env.observation_space
    assert space.shape == (6,) and space.dtype == np.float32
    np.testing.assert_array_equal(space.low, np.arange(6, dtype=np.float32) - 10.0)
    np.testing.assert_array_equal(space.high, np.arange(6, dtype=np.float32) + 10.0)
    obs, _ = env.reset(seed=1)
    assert obs.dtype == np.float32 and space.contains(obs)
    np.testing.assert_array_equal(obs, inner.last.astype(np.float32).reshape(-1))
    obs, *_ = env.step(0)
    np.testing.assert_array_equal(obs, inner.last.astype(np.float32).reshape(-1))


def test_adapt_observations_picks_the_wrapper_per_space() -> None:
    """Each space type gets the one wrapper RLlib's default encoders need, no more."""
    import minigrid  # noqa: F401

    assert isinstance(adapt_observations(gym.make("FrozenLake-v1")), OneHotObservation)
    assert isinstance(adapt_observations(gym.make("MiniGrid-Empty-8x8-v0")),
                      ScaledImageObservation)
    assert isinstance(adapt_observations(GridBoxEnv()), FlatFloatObservation)
    cartpole = gym.make("CartPole-v1")
    assert cartpole.observation_space.dtype == np.float32
    assert adapt_observations(cartpole) is cartpole  # already a float32 vector: untouched


def test_adapt_observations_uses_the_given_image_scale() -> None:
    import minigrid  # noqa: F401

    env = adapt_observations(RecordRaw(gym.make("MiniGrid-Empty-8x8-v0")), image_scale=1.0)
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs, env.env.last["image"].astype(np.float32))
    np.testing.assert_allclose(env.observation_space.high, 255.0)


@pytest.mark.parametrize(("typo", "hint"), [("CartPole-v2", "CartPole-v1"),
                                            ("LunarLander-v9", "LunarLander-v3")])
def test_check_env_id_suggests_close_matches(typo: str, hint: str) -> None:
    """A typo in a config must fail before any worker starts, and say what was meant."""
    with pytest.raises(UnknownEnvironmentError, match="did you mean") as err:
        check_env_id(typo)
    assert repr(typo) in str(err.value) and hint in str(err.value)
    assert isinstance(err.value, ValueError)


def test_check_env_id_accepts_known_and_prefixed_ids() -> None:
    assert check_env_id("CartPole-v1") == "CartPole-v1"
    assert check_env_id("iif/CartPole-v1") == "CartPole-v1"
    assert check_env_id("MiniGrid-Empty-8x8-v0") == "MiniGrid-Empty-8x8-v0"  # imports minigrid
    with pytest.raises(UnknownEnvironmentError, match="non-empty string"):
        check_env_id("")


def test_make_env_passes_kwargs_and_adapts() -> None:
    """``env_config["kwargs"]`` reaches ``gym.make``: the 8x8 lake has 64 states."""
    small = make_env("FrozenLake-v1")
    big = make_env("FrozenLake-v1", {"kwargs": {"map_name": "8x8", "is_slippery": False}})
    assert small.observation_space.shape == (16,)
    assert big.observation_space.shape == (64,)
    obs, _ = big.reset(seed=0)
    assert obs.shape == (64,) and obs[0] == 1.0 and obs.sum() == 1.0
    obs, *_ = big.step(2)  # not slippery: "right" moves from state 0 to state 1
    assert int(obs.argmax()) == 1
    with pytest.raises(UnknownEnvironmentError):
        make_env("FrozenLake-v7")
