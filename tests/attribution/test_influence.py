"""Influence scores against an independent brute-force oracle.

The oracle never touches ``iif_ray.attribution``: it runs the RLlib module's own forward pass
and RLlib's own action distribution classes, and calls ``torch.autograd.grad`` once per record.
Both exact scorers (JVP and per-sample gradients) must match it on RLlib's real modules.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import DefaultPPOTorchRLModule
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from iif_ray.attribution import (
    ActionTarget,
    RecordBatch,
    jvp_scores,
    per_sample_scores,
    return_target,
    target_gradient,
)
from iif_ray.rllib.module_bridge import functional_policy

REL_TOL = 1e-5

CASES = {
    "mlp-discrete": dict(
        obs=gym.spaces.Box(-1, 1, (8,), np.float32), act=gym.spaces.Discrete(4),
        model={"fcnet_hiddens": [64, 64], "vf_share_layers": False},
    ),
    "mlp-default-256": dict(
        obs=gym.spaces.Box(-1, 1, (6,), np.float32), act=gym.spaces.Discrete(3),
        model={},  # RLlib's own defaults: [256, 256] tanh
    ),
    "gaussian": dict(
        obs=gym.spaces.Box(-1, 1, (24,), np.float32),
        act=gym.spaces.Box(-1, 1, (4,), np.float32),
        model={"fcnet_hiddens": [64, 64], "vf_share_layers": False},
    ),
    "gaussian-free-log-std": dict(
        obs=gym.spaces.Box(-1, 1, (11,), np.float32),
        act=gym.spaces.Box(-1, 1, (3,), np.float32),
        model={"fcnet_hiddens": [32, 32], "vf_share_layers": False, "free_log_std": True},
    ),
    "minigrid-cnn-shared": dict(
        obs=gym.spaces.Box(0, 1, (7, 7, 3), np.float32), act=gym.spaces.Discrete(7),
        model={"conv_filters": [[16, [3, 3], 1], [32, [3, 3], 1]], "conv_activation": "relu",
               "head_fcnet_hiddens": [64, 64], "vf_share_layers": True},
    ),
}


def build_module(case: dict) -> DefaultPPOTorchRLModule:
    spec = RLModuleSpec(module_class=DefaultPPOTorchRLModule, observation_space=case["obs"],
                        action_space=case["act"], model_config=case["model"])
    torch.manual_seed(0)
    return spec.build()


def policy_parameters(module) -> dict[str, torch.Tensor]:
    """Policy params chosen by name, independently of ``rllib_policy``: all but the critic."""
    return {k: p for k, p in module.named_parameters()
            if not (k.startswith("vf.") or k.startswith("encoder.critic_encoder."))}


def make_batch(module, case: dict, n: int, seed: int = 1) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    obs_space, act_space = case["obs"], case["act"]
    obs = torch.rand((n, *obs_space.shape), generator=gen) * 2 - 1
    if obs_space.low.min() >= 0:
        obs = obs.abs()
    if isinstance(act_space, gym.spaces.Discrete):
        actions = torch.randint(0, act_space.n, (n,), generator=gen)
    else:
        actions = torch.randn((n, *act_space.shape), generator=gen)
    with torch.no_grad():
        out = module.forward_train({Columns.OBS: obs})
        dist = module.get_train_action_dist_cls().from_logits(out[Columns.ACTION_DIST_INPUTS])
        logp = dist.logp(actions)
    adv_raw = torch.randn(n, generator=gen) * 3 + 0.5
    return {"obs": obs, "actions": actions, "logp_old": logp,
            "advantages_raw": adv_raw, "advantages": (adv_raw - adv_raw.mean()) / adv_raw.std()}


def oracle_scores(module, batch: dict, target_kind: str, probe: dict | None,
                  entropy_coeff: float) -> np.ndarray:
    """``-<grad l_j, grad f>`` with one autograd call per record, through RLlib's own code."""
    params = policy_parameters(module)
    names = list(params)
    dist_cls = module.get_train_action_dist_cls()

    def dist_of(obs):
        logits = module.forward_train({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]
        return dist_cls.from_logits(logits)

    if target_kind == "return":
        f = (batch["advantages_raw"] * dist_of(batch["obs"]).logp(batch["actions"])).mean()
    else:
        f = dist_of(probe["obs"]).logp(probe["actions"]).mean()
    g_f = torch.autograd.grad(f, [params[k] for k in names], allow_unused=True)
    g_f = [torch.zeros_like(params[k]) if g is None else g for k, g in zip(names, g_f, strict=True)]

    out = []
    for j in range(len(batch["actions"])):
        d = dist_of(batch["obs"][j:j + 1])
        ratio = torch.exp(d.logp(batch["actions"][j:j + 1]) - batch["logp_old"][j:j + 1])
        loss = (-ratio * batch["advantages"][j:j + 1] - entropy_coeff * d.entropy()).sum()
        g_l = torch.autograd.grad(loss, [params[k] for k in names], allow_unused=True)
        dot = sum(float((gl * gf).sum()) for gl, gf in zip(g_l, g_f, strict=True) if gl is not None)
        out.append(-dot)
    return np.asarray(out)


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


@pytest.mark.parametrize("case_name", list(CASES))
@pytest.mark.parametrize("target_kind", ["return", "action"])
def test_scores_match_bruteforce_oracle(case_name: str, target_kind: str) -> None:
    case = CASES[case_name]
    module = build_module(case)
    n = 48
    batch = make_batch(module, case, n)
    entropy_coeff = 0.01
    if target_kind == "return":
        target = return_target
        probe = None
    else:
        probe_batch = make_batch(module, case, 5, seed=7)
        probe = {"obs": probe_batch["obs"], "actions": probe_batch["actions"]}
        target = ActionTarget(probe_obs=probe["obs"], probe_actions=probe["actions"])

    expected = oracle_scores(module, batch, target_kind, probe, entropy_coeff)
    policy = functional_policy(module)
    _, direction = target_gradient(policy, target, batch)
    records = RecordBatch(batch["obs"], batch["actions"], batch["logp_old"], batch["advantages"])
    by_jvp = jvp_scores(policy, records, direction, entropy_coeff=entropy_coeff, chunk_size=20)
    by_ps = per_sample_scores(policy, records, direction, entropy_coeff=entropy_coeff,
                              chunk_size=16)
    assert np.abs(expected).max() > 1e-6, "degenerate oracle: all scores ~0"
    assert rel_err(by_jvp.numpy(), expected) < REL_TOL
    assert rel_err(by_ps.numpy(), expected) < REL_TOL


def test_policy_parameters_exclude_value_network() -> None:
    module = build_module(CASES["mlp-discrete"])
    names = set(functional_policy(module).params())
    assert names and not any("critic" in k or k.startswith("vf") for k in names)
    # Same count as the oracle's independent choice.
    assert sum(p.numel() for p in functional_policy(module).params().values()) == sum(
        p.numel() for p in policy_parameters(module).values())


@pytest.mark.parametrize("case_name", ["mlp-discrete", "gaussian"])
def test_our_distributions_match_rllib(case_name: str) -> None:
    case = CASES[case_name]
    module = build_module(case)
    batch = make_batch(module, case, 32)
    policy = functional_policy(module)
    params = policy.params()
    with torch.no_grad():
        ours = policy.logp(params, batch["obs"], batch["actions"])
        ent = policy.entropy(params, batch["obs"])
        logits = module.forward_train({Columns.OBS: batch["obs"]})[Columns.ACTION_DIST_INPUTS]
        dist = module.get_train_action_dist_cls().from_logits(logits)
    torch.testing.assert_close(ours, batch["logp_old"], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ent, dist.entropy(), rtol=1e-6, atol=1e-6)
