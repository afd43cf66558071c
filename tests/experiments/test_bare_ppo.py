"""The bare torch PPO loop the speed benchmark compares against: it is PPO (it learns), and
its advantages are GAE(lambda)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from iif_ray.experiments.bare_ppo import BarePPO
from iif_ray.experiments.threads import torch_threads
from iif_ray.presets import get_preset


def gae_oracle(rewards, values, dones, last_value, gamma, lam) -> np.ndarray:
    """Advantages as discounted sums of TD errors, each summed forward to its episode end."""
    T = len(rewards)
    v_next = np.append(values[1:], last_value)
    delta = rewards + gamma * v_next * (1 - dones) - values
    adv = np.zeros(T)
    for t in range(T):
        k, w = t, 1.0
        while k < T:
            adv[t] += w * delta[k]
            if dones[k]:
                break
            w *= gamma * lam
            k += 1
    return adv


def test_advantages_are_gae() -> None:
    preset = dataclasses.replace(get_preset("cartpole"), steps_per_round=256)
    ppo = BarePPO(preset, seed=1)
    b = ppo.collect()
    values = (b["returns"] - b["adv"]).numpy()  # returns = advantages + values
    with torch.no_grad():
        recomputed = ppo.vf(b["obs"]).squeeze(-1).numpy()
    np.testing.assert_allclose(values, recomputed, atol=1e-5)
    dones = b["dones"].numpy()
    assert dones.sum() >= 2  # episodes end inside the round
    rewards = np.ones(256)  # CartPole pays 1 per step; no time limit cut in 256 steps
    expected = gae_oracle(rewards, values, dones, ppo.values(ppo.obs[None])[0],
                          preset.gamma, preset.lambda_)
    np.testing.assert_allclose(b["adv"].numpy(), expected, rtol=1e-4, atol=1e-4)


def test_it_learns_cartpole() -> None:
    preset = dataclasses.replace(get_preset("cartpole"), optimizer="adam", lr=1e-3)
    ppo = BarePPO(preset, seed=0, num_envs=4)
    lengths = []
    with torch_threads(1):  # tiny networks: more threads only contend on a busy machine
        for _ in range(6):
            b = ppo.collect()
            lengths.append(len(b["dones"]) / max(float(b["dones"].sum()), 1.0))
            ppo.update(b)
    ppo.close()
    assert lengths[-1] > 3 * lengths[0], lengths


def test_refuses_what_it_does_not_cover() -> None:
    with pytest.raises(ValueError, match="uses a CNN"):
        BarePPO(get_preset("minigrid"))
    with pytest.raises(ValueError, match="needs discrete actions"):
        BarePPO(get_preset("bipedalwalker"))
