"""The default IIF RLModule: same outputs as RLlib's, without the per-step mode toggle."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import DefaultPPOTorchRLModule
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from torch import nn

from iif_ray.algorithm import IIFConfig
from iif_ray.modules import IIFPPOTorchRLModule, mode_independent


def build(cls):
    torch.manual_seed(0)
    return RLModuleSpec(module_class=cls, observation_space=gym.spaces.Box(-1, 1, (4,), np.float32),
                        action_space=gym.spaces.Discrete(2),
                        model_config={"fcnet_hiddens": [16], "vf_share_layers": False}).build()


def test_outputs_equal_rllib_and_mode_is_left_alone() -> None:
    ours, theirs = build(IIFPPOTorchRLModule), build(DefaultPPOTorchRLModule)
    obs = {Columns.OBS: torch.randn(5, 4)}
    for fn in ("forward_exploration", "forward_inference"):
        a = getattr(ours, fn)(obs)[Columns.ACTION_DIST_INPUTS]
        b = getattr(theirs, fn)(obs)[Columns.ACTION_DIST_INPUTS]
        torch.testing.assert_close(a, b)
        assert not a.requires_grad
    ours.train()
    ours.forward_exploration(obs)
    assert ours.training  # never toggled


def test_mode_dependence_detection() -> None:
    assert mode_independent(nn.Sequential(nn.Linear(2, 2), nn.Tanh(), nn.LayerNorm(2)))
    assert not mode_independent(nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.1)))
    assert not mode_independent(nn.Sequential(nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1)))


def test_iif_config_uses_it_by_default() -> None:
    assert IIFConfig().get_default_rl_module_spec().module_class is IIFPPOTorchRLModule
