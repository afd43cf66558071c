"""The default IIF RLModule: same outputs as RLlib's, without the per-step mode toggle."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import DefaultPPOTorchRLModule
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from torch import nn

from iif_ray.rllib import IIFConfig
from iif_ray.rllib.module import IIFPPOTorchRLModule, init_output_layers, mode_independent


def build(cls, **model_config):
    torch.manual_seed(0)
    return RLModuleSpec(module_class=cls, observation_space=gym.spaces.Box(-1, 1, (4,), np.float32),
                        action_space=gym.spaces.Discrete(3),
                        model_config={"fcnet_hiddens": [16], "vf_share_layers": False,
                                      **model_config}).build()


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


def build_space(cls, obs_space, act_space, **model_config):
    torch.manual_seed(0)
    return RLModuleSpec(module_class=cls, observation_space=obs_space, action_space=act_space,
                        model_config={"fcnet_hiddens": [16, 8], **model_config}).build()


@pytest.mark.parametrize(("act_space", "model_config", "plain"), [
    (gym.spaces.Discrete(3), {"vf_share_layers": False}, True),
    # RLlib's Gaussian head clips its log-stds, a shared encoder has one trunk: RLlib's code.
    (gym.spaces.Box(-1, 1, (2,), np.float32), {"vf_share_layers": False}, False),
    (gym.spaces.Discrete(3), {"vf_share_layers": True}, False),
])
def test_plain_forwards_are_rllibs_floats_and_gradients(act_space, model_config,
                                                         plain) -> None:
    """The direct Sequential calls give RLlib's outputs bit for bit, and the same
    gradients; other structures keep RLlib's forwards."""
    obs_space = gym.spaces.Box(-1, 1, (4,), np.float32)
    ours = build_space(IIFPPOTorchRLModule, obs_space, act_space, **model_config)
    theirs = build_space(DefaultPPOTorchRLModule, obs_space, act_space, **model_config)
    assert (ours._plain is not None) == plain
    batch = {Columns.OBS: torch.randn(7, 4)}
    with torch.no_grad():
        assert torch.equal(ours._forward(batch)[Columns.ACTION_DIST_INPUTS],
                           theirs._forward(batch)[Columns.ACTION_DIST_INPUTS])
    grads = []
    for m in (ours, theirs):
        out = m._forward_train(batch)
        values = m.compute_values(batch, embeddings=out[Columns.EMBEDDINGS])
        assert torch.equal(values, m.compute_values(batch))  # embeddings recomputed
        (out[Columns.ACTION_DIST_INPUTS].square().sum() + values.sum()).backward()
        grads.append((out, values, {k: p.grad for k, p in m.named_parameters()}))
    (out_a, v_a, g_a), (out_b, v_b, g_b) = grads
    for key in (Columns.ACTION_DIST_INPUTS, Columns.EMBEDDINGS):
        assert torch.equal(out_a[key], out_b[key]), key
    assert torch.equal(v_a, v_b) and g_a.keys() == g_b.keys()
    for k in g_a:
        assert torch.equal(g_a[k], g_b[k]), k


def test_mode_dependence_detection() -> None:
    assert mode_independent(nn.Sequential(nn.Linear(2, 2), nn.Tanh(), nn.LayerNorm(2)))
    assert not mode_independent(nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.1)))
    assert not mode_independent(nn.Sequential(nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1)))


def test_iif_config_uses_it_by_default() -> None:
    assert IIFConfig().get_default_rl_module_spec().module_class is IIFPPOTorchRLModule


def test_head_output_gains_give_orthogonal_output_layers() -> None:
    plain = build(IIFPPOTorchRLModule)
    module = build(IIFPPOTorchRLModule, head_output_gains={"pi": 0.01, "vf": 1.0})
    pi_w, vf_w = module.pi.net.mlp[-1].weight, module.vf.net.mlp[-1].weight
    assert pi_w.shape == (3, 16) and vf_w.shape == (1, 16)
    # Rows are orthogonal with norm = gain: W W^T = gain^2 I.
    torch.testing.assert_close(pi_w @ pi_w.T, 1e-4 * torch.eye(3), atol=1e-7, rtol=1e-4)
    torch.testing.assert_close(vf_w @ vf_w.T, torch.ones(1, 1))
    assert not module.pi.net.mlp[-1].bias.any() and not module.vf.net.mlp[-1].bias.any()
    # The default init is RLlib's (torch's), far from a near-uniform first policy.
    assert plain.pi.net.mlp[-1].weight.norm(dim=1).min() > 0.1
    logits = module.forward_inference({Columns.OBS: torch.randn(64, 4)})[
        Columns.ACTION_DIST_INPUTS]
    assert logits.abs().max() < 0.05
    # Encoders are untouched.
    for a, b in zip(plain.encoder.parameters(), module.encoder.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_head_output_gains_reject_bad_values() -> None:
    module = build(IIFPPOTorchRLModule)
    with pytest.raises(ValueError, match="keys must be in"):
        init_output_layers(module, {"policy": 0.01})
    with pytest.raises(ValueError, match=r"head_output_gains\['vf'\] must be a number > 0, got -1"):
        init_output_layers(module, {"vf": -1})
