"""Bridge from RLlib RLModules to :class:`~iif_ray.attribution.FunctionalPolicy`.

The policy network is the part of the module that produces the action distribution inputs:
for RLlib's default PPO module the actor encoder (or the shared encoder) followed by the
``pi`` head. The value head and a separate critic encoder are left out, so gradients and
influence scores live in the policy-parameter space only.

Custom RLModules can opt in by defining ``iif_policy_net() -> nn.Module`` (observations in,
distribution inputs out) and, if their distribution is not one of RLlib's defaults,
``iif_action_distribution() -> str``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from ray.rllib.core.columns import Columns
from ray.rllib.core.models.base import ENCODER_OUT
from torch import Tensor, nn

from iif_ray.attribution import FunctionalPolicy, make_distribution

# RLlib's torch distribution classes -> our forward-AD-safe equivalents.
_RLLIB_DISTRIBUTIONS = {
    "TorchCategorical": "categorical",
    "TorchDiagGaussian": "diag_gaussian",
}


class EncoderHeadPolicy(nn.Module):
    """``obs -> pi(encoder({obs})[ENCODER_OUT])``, sharing the module's own submodules."""

    def __init__(self, encoder: nn.Module, pi: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.pi = pi

    def forward(self, obs: Tensor) -> Tensor:
        return self.pi(self.encoder({Columns.OBS: obs})[ENCODER_OUT])


def policy_net(module: Any) -> nn.Module:
    """The network from observations to distribution inputs inside ``module``."""
    module = module.unwrapped() if hasattr(module, "unwrapped") else module
    if hasattr(module, "iif_policy_net"):
        return module.iif_policy_net()
    if getattr(module, "is_stateful", lambda: False)():
        raise ValueError(
            "influence scoring does not support stateful (LSTM/attention) RLModules yet; "
            "set model_config use_lstm=False"
        )
    encoder = getattr(module, "encoder", None)
    pi = getattr(module, "pi", None)
    if encoder is None or pi is None:
        raise ValueError(
            f"{type(module).__name__} has no encoder/pi structure; define "
            "`iif_policy_net()` on the module to make it scorable"
        )
    if hasattr(encoder, "actor_encoder"):
        return EncoderHeadPolicy(encoder.actor_encoder, pi)
    if hasattr(encoder, "encoder"):  # vf_share_layers=True: the shared trunk is policy too
        return EncoderHeadPolicy(encoder.encoder, pi)
    raise ValueError(f"unrecognised encoder layout in {type(module).__name__}")


def distribution_name(module: Any) -> str:
    module = module.unwrapped() if hasattr(module, "unwrapped") else module
    if hasattr(module, "iif_action_distribution"):
        return module.iif_action_distribution()
    cls = module.get_train_action_dist_cls()
    name = getattr(cls, "__name__", None) or getattr(getattr(cls, "func", None), "__name__", "")
    if name not in _RLLIB_DISTRIBUTIONS:
        raise ValueError(
            f"action distribution {name!r} is not supported for influence scoring; "
            f"supported: {sorted(_RLLIB_DISTRIBUTIONS)}"
        )
    return _RLLIB_DISTRIBUTIONS[name]


def functional_policy(module: Any) -> FunctionalPolicy:
    """Wrap an RLModule (learner-side or a replica) as a functional policy."""
    return FunctionalPolicy(policy_net(module), make_distribution(distribution_name(module)))


def policy_from_spec(spec: Any) -> FunctionalPolicy:
    """Build a fresh module from an ``RLModuleSpec`` and wrap its policy network.

    Scorer actors call this (through a ``functools.partial``) to build their replicas: the
    spec pickles small, and the weights arrive each round by object reference.
    """
    return functional_policy(spec.build())


def policy_builders(multi_module: Any) -> dict[str, Callable[[], FunctionalPolicy]]:
    """Picklable replica builders for every module of a learner's ``MultiRLModule``."""
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    return {mid: partial(policy_from_spec, RLModuleSpec.from_module(multi_module[mid].unwrapped()))
            for mid in multi_module.keys()}  # noqa: SIM118 (a MultiRLModule, not a dict)
