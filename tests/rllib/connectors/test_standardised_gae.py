"""StandardisedGAE against RLlib's GeneralAdvantageEstimation, on the same sampled episodes.

Both learner pipelines (plain RLlib PPO, and IIF's with RLlib's GAE swapped for ours) run on
copies of one set of CartPole episodes with identical module weights. The episodes include
terminated episodes, time-limit truncated ones and a chunk cut by the end of sampling, so
every kind of phantom bootstrap row RLlib appends is present.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import pytest
import torch
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.core import COMPONENT_RL_MODULE
from ray.rllib.core.columns import Columns
from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

from iif_ray.rllib import IIFConfig
from iif_ray.rllib.connectors import ADVANTAGES_RAW, InfluenceFilter, StandardisedGAE

N_STEPS = 200
MAX_EPISODE_STEPS = 20  # short time limit: some episodes end truncated, not terminated
GAMMA, LAMBDA = 0.97, 0.9
MODULE = "default_policy"
ATOL = 1e-5


@dataclass
class Pipelines:
    """One set of episodes run through RLlib's PPO pipeline and through IIF's."""

    episodes: list  # as sampled, never mutated
    rllib: dict[str, np.ndarray]  # RLlib PPO pipeline output, ends with its GAE
    ours: dict[str, np.ndarray]  # IIF pipeline output, up to and including StandardisedGAE
    values: np.ndarray  # V(s) per batch row, phantom rows included
    iif_pieces: list


def _configure(cfg: PPOConfig) -> PPOConfig:
    return (
        cfg.environment("CartPole-v1", env_config={"max_episode_steps": MAX_EPISODE_STEPS})
        .env_runners(num_env_runners=0)
        .training(train_batch_size_per_learner=N_STEPS, minibatch_size=50, num_epochs=1,
                  gamma=GAMMA, lambda_=LAMBDA)
        .rl_module(model_config={"fcnet_hiddens": [16], "vf_share_layers": False})
        .debugging(seed=0)
    )


def _numpy(cols: dict) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() if torch.is_tensor(v) else np.asarray(v)
            for k, v in cols.items()}


@pytest.fixture(scope="module")
def pipelines() -> Pipelines:
    iif_cfg = _configure(IIFConfig()).attribution(mode="off")
    ppo_cfg = _configure(PPOConfig())
    iif_learner = iif_cfg.build_learner(env=gym.make("CartPole-v1"))
    ppo_learner = ppo_cfg.build_learner(env=gym.make("CartPole-v1"))
    weights = iif_learner.get_state(components=COMPONENT_RL_MODULE)
    ppo_learner.set_state(weights)

    runner = SingleAgentEnvRunner(config=iif_cfg)
    runner.set_state(weights)
    episodes = runner.sample(num_timesteps=N_STEPS, random_actions=False)

    rllib = ppo_learner._learner_connector(
        rl_module=ppo_learner.module, batch={}, episodes=copy.deepcopy(episodes),
        shared_data={}, metrics=ppo_learner.metrics)

    # IIF's pipeline minus its last piece (the influence filter drops the phantom rows).
    pieces = list(iif_learner._learner_connector.connectors)
    batch: dict = {}
    shared: dict = {}
    iif_episodes = copy.deepcopy(episodes)
    for piece in pieces[:-1]:
        batch = piece(rl_module=iif_learner.module, batch=batch, episodes=iif_episodes,
                      shared_data=shared, metrics=iif_learner.metrics)

    with torch.no_grad():
        values = iif_learner.module[MODULE].compute_values(batch[MODULE])
        ppo_values = ppo_learner.module[MODULE].compute_values(rllib[MODULE])
    torch.testing.assert_close(values, ppo_values)  # same weights, same inputs
    return Pipelines(episodes=episodes, rllib=_numpy(rllib[MODULE]), ours=_numpy(batch[MODULE]),
                     values=values.cpu().numpy(), iif_pieces=pieces)


def _standardise(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / max(1e-4, float(x.std()))


def test_iif_pipeline_swaps_rllib_gae_for_ours(pipelines: Pipelines) -> None:
    """Guards the premise of every other test: our piece replaces RLlib's, configured alike."""
    names = [type(p).__name__ for p in pipelines.iif_pieces]
    assert "GeneralAdvantageEstimation" not in names
    assert isinstance(pipelines.iif_pieces[-2], StandardisedGAE)
    assert isinstance(pipelines.iif_pieces[-1], InfluenceFilter)
    assert (pipelines.iif_pieces[-2].gamma, pipelines.iif_pieces[-2].lambda_) == (GAMMA, LAMBDA)


def test_episodes_cover_every_kind_of_phantom_row(pipelines: Pipelines) -> None:
    """Without terminated, time-limit truncated and cut chunks the comparison proves less."""
    eps = pipelines.episodes
    assert any(e.is_terminated for e in eps)
    assert any(e.is_truncated for e in eps)  # hit the time limit
    assert not eps[-1].is_done  # the chunk cut by the end of sampling
    mask = pipelines.ours[Columns.LOSS_MASK].astype(bool)
    assert mask.sum() == sum(len(e) for e in eps) == N_STEPS
    assert (~mask).sum() == len(eps)  # exactly one phantom row per episode chunk
    np.testing.assert_array_equal(mask, pipelines.rllib[Columns.LOSS_MASK].astype(bool))


def test_both_pipelines_build_the_same_batch_besides_gae(pipelines: Pipelines) -> None:
    """Only the GAE columns may differ; otherwise the IIF baseline would not be RLlib's PPO."""
    ours, rllib = pipelines.ours, pipelines.rllib
    assert set(ours) == set(rllib) | {ADVANTAGES_RAW}
    for name in set(rllib) - {Columns.ADVANTAGES, Columns.VALUE_TARGETS}:
        np.testing.assert_array_equal(ours[name], rllib[name], err_msg=name)


def test_value_targets_equal_rllib(pipelines: Pipelines) -> None:
    """Same GAE maths as RLlib on every row, phantom rows included."""
    ours, rllib = pipelines.ours, pipelines.rllib
    assert ours[Columns.VALUE_TARGETS].dtype == np.float32
    np.testing.assert_allclose(ours[Columns.VALUE_TARGETS], rllib[Columns.VALUE_TARGETS],
                               rtol=0, atol=ATOL)


def test_real_rows_match_an_independent_per_episode_gae(pipelines: Pipelines) -> None:
    """GAE per episode from first principles: bootstrap 0 after a terminal step, V(s_T) else.

    Both pieces share RLlib's ``compute_value_targets``; this checks that maths itself, and
    that the batch rows line up with the episodes (real rows, then one phantom row).
    """
    ours, values = pipelines.ours, pipelines.values
    start = 0
    for ep in pipelines.episodes:
        n = len(ep)
        obs = np.asarray(ep.get_observations(), dtype=np.float32)  # n + 1: final obs included
        np.testing.assert_array_equal(ours[Columns.OBS][start:start + n + 1], obs)
        np.testing.assert_array_equal(ours[Columns.REWARDS][start:start + n],
                                      np.asarray(ep.get_rewards(), dtype=np.float32))
        v = values[start:start + n + 1].astype(np.float64)
        next_v = np.append(v[1:n], 0.0 if ep.is_terminated else v[n])
        rewards = np.asarray(ep.get_rewards(), dtype=np.float64)
        deltas = rewards + GAMMA * next_v - v[:n]
        adv = np.zeros(n)
        running = 0.0
        for t in reversed(range(n)):
            running = deltas[t] + GAMMA * LAMBDA * running
            adv[t] = running
        np.testing.assert_allclose(ours[Columns.VALUE_TARGETS][start:start + n], adv + v[:n],
                                   rtol=0, atol=ATOL)
        np.testing.assert_allclose(ours[ADVANTAGES_RAW][start:start + n], adv, rtol=0, atol=ATOL)
        start += n + 1
    assert start == len(values)


def test_raw_advantages_are_targets_minus_values(pipelines: Pipelines) -> None:
    """The IIF return target is defined on these raw advantages, so they must be exact."""
    ours = pipelines.ours
    assert ours[ADVANTAGES_RAW].dtype == np.float32
    np.testing.assert_allclose(ours[ADVANTAGES_RAW],
                               ours[Columns.VALUE_TARGETS] - pipelines.values, rtol=0, atol=ATOL)


def test_ours_standardises_over_real_rows_only(pipelines: Pipelines) -> None:
    """Dropping records must not be able to shift the others' advantages via phantom rows."""
    ours = pipelines.ours
    raw = ours[ADVANTAGES_RAW]
    real = ours[Columns.LOSS_MASK].astype(bool)
    expected = (raw - raw[real].mean()) / raw[real].std()
    np.testing.assert_allclose(ours[Columns.ADVANTAGES], expected, rtol=0, atol=ATOL)
    assert abs(ours[Columns.ADVANTAGES][real].mean()) < ATOL
    assert ours[Columns.ADVANTAGES][real].std() == pytest.approx(1.0, abs=ATOL)


def test_rllib_standardises_over_all_rows_phantoms_included(pipelines: Pipelines) -> None:
    """RLlib's advantages are the same raw advantages, standardised with phantom rows counted.

    So the two pieces differ on real rows exactly by the phantom rows' share of mean and std.
    """
    ours, rllib = pipelines.ours, pipelines.rllib
    raw = rllib[Columns.VALUE_TARGETS] - pipelines.values
    real = ours[Columns.LOSS_MASK].astype(bool)
    np.testing.assert_allclose(rllib[Columns.ADVANTAGES], _standardise(raw), rtol=0, atol=ATOL)
    # Over the real rows alone RLlib's advantages are not standardised ...
    assert abs(rllib[Columns.ADVANTAGES][real].mean()) > 10 * ATOL
    # ... and phantom rows carry non-zero advantages (GAE leaks the next chunk into them).
    assert np.abs(raw[~real]).max() > 1e-2
    # Standardised over the real rows only, RLlib's raw advantages give ours exactly.
    np.testing.assert_allclose(_standardise(raw[real]), ours[Columns.ADVANTAGES][real],
                               rtol=0, atol=ATOL)
    assert np.abs(rllib[Columns.ADVANTAGES][real] - ours[Columns.ADVANTAGES][real]).max() > 1e-3
