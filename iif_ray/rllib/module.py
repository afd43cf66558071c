"""The PPO RLModule IIF configs use by default: RLlib's, minus per-call mode toggles.

RLlib's ``TorchRLModule.forward_exploration`` switches the whole module to ``eval()`` and back
to ``train()`` on every environment step, and ``forward_train`` calls ``train()`` on every
minibatch; each walks every submodule. For networks whose layers behave the same in both
modes (no dropout, no batch norm: true for all default PPO networks) the toggles change
nothing but cost about 13% of single-environment sampling time and about 5% of a PPO update
on CPU. This module skips them in that case and behaves exactly like RLlib's otherwise.

RLlib's encoder and heads wrap each torch ``Sequential`` in two more modules (model, MLP),
and its sampling forward runs the critic encoder too, only to drop its output. For RLlib's
default separate-MLP actor-critic (every flat-observation preset), the forwards here call the
``Sequential`` networks directly and sampling skips the critic: the same layers on the same
inputs, hence the same floats and gradients (``tests/rllib/test_module.py``), for about a
third less sampling-side forward time on CPU. Any other encoder or head runs RLlib's code.

RLlib's PPO catalog leaves the policy and value output layers at torch's default init and
ignores any head initializer in the model config. Stable-Baselines3, the paper's base, makes
them orthogonal with gains 0.01 (policy: a near-uniform first policy) and 1 (value). The model
config key ``head_output_gains`` (``{"pi": 0.01, "vf": 1.0}``) applies that init here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import DefaultPPOTorchRLModule
from ray.rllib.core.columns import Columns
from ray.rllib.core.models.torch.encoder import TorchActorCriticEncoder, TorchMLPEncoder
from ray.rllib.core.models.torch.heads import TorchMLPHead
from ray.rllib.utils.annotations import override
from torch import nn

_MODE_DEPENDENT = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._BatchNorm,
                   nn.modules.instancenorm._InstanceNorm)


def mode_independent(module: nn.Module) -> bool:
    """True if ``train()``/``eval()`` cannot change this module's outputs."""
    return not any(isinstance(m, _MODE_DEPENDENT) for m in module.modules())


HEADS = ("pi", "vf")


def init_output_layers(module: nn.Module, gains: dict[str, float]) -> None:
    """Orthogonal weights with the given gain and zero bias on each head's last linear layer."""
    unknown = set(gains) - set(HEADS)
    if unknown:
        raise ValueError(f"head_output_gains keys must be in {HEADS}, got {sorted(unknown)}")
    for head, gain in gains.items():
        if not (isinstance(gain, (int, float)) and gain > 0):
            raise ValueError(f"head_output_gains[{head!r}] must be a number > 0, got {gain!r}")
        linears = [m for m in getattr(module, head).modules() if isinstance(m, nn.Linear)]
        if not linears:  # a head without a linear layer cannot take this init
            raise ValueError(f"head {head!r} has no linear output layer")
        with torch.no_grad():
            nn.init.orthogonal_(linears[-1].weight, gain=float(gain))
            nn.init.zeros_(linears[-1].bias)


def plain_networks(module: DefaultPPOTorchRLModule) -> PlainNetworks | None:
    """The ``Sequential`` networks inside RLlib's separate-MLP actor-critic encoder and MLP
    heads (no log-std clipping), or None for any other structure."""
    enc, pi, vf = module.encoder, getattr(module, "pi", None), getattr(module, "vf", None)
    if not (type(enc) is TorchActorCriticEncoder and not enc.config.shared
            and type(enc.actor_encoder) is TorchMLPEncoder
            and type(pi) is TorchMLPHead and not pi.clip_log_std):
        return None
    critic = enc.critic_encoder
    plain_critic = (type(critic) is TorchMLPEncoder and type(vf) is TorchMLPHead
                    and not vf.clip_log_std)
    return PlainNetworks(actor=enc.actor_encoder.net.mlp, pi=pi.net.mlp,
                         critic=critic.net.mlp if plain_critic else None,
                         vf=vf.net.mlp if plain_critic else None)


@dataclass(frozen=True)
class PlainNetworks:
    """Actor encoder and policy head; critic encoder and value head (None: RLlib's own)."""

    actor: nn.Module
    pi: nn.Module
    critic: nn.Module | None
    vf: nn.Module | None


class IIFPPOTorchRLModule(DefaultPPOTorchRLModule):
    """RLlib's default PPO module without per-call mode toggles or wrapper calls, with
    optional SB3 head init."""

    @override(DefaultPPOTorchRLModule)
    def setup(self) -> None:
        super().setup()
        self._mode_free = mode_independent(self)
        self._plain = plain_networks(self)  # None for recurrent, CNN, shared encoders
        gains = (self.model_config or {}).get("head_output_gains")
        if gains:
            init_output_layers(self, gains)

    @override(DefaultPPOTorchRLModule)
    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """RLlib's sampling forward: the policy's logits (the critic's output it would drop
        is not computed)."""
        if self._plain is None:
            return super()._forward(batch, **kwargs)
        return {Columns.ACTION_DIST_INPUTS: self._plain.pi(self._plain.actor(batch[Columns.OBS]))}

    @override(DefaultPPOTorchRLModule)
    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """RLlib's train forward: critic embeddings and the policy's logits."""
        if self._plain is None or self._plain.critic is None:
            return super()._forward_train(batch, **kwargs)
        obs = batch[Columns.OBS]
        actor = self._plain.actor(obs)
        return {Columns.EMBEDDINGS: self._plain.critic(obs),
                Columns.ACTION_DIST_INPUTS: self._plain.pi(actor)}

    @override(DefaultPPOTorchRLModule)
    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> Any:
        if self._plain is None or self._plain.critic is None:
            return super().compute_values(batch, embeddings=embeddings)
        if embeddings is None:
            embeddings = self._plain.critic(batch[Columns.OBS])
        return self._plain.vf(embeddings).squeeze(-1)

    @override(DefaultPPOTorchRLModule)
    def forward_exploration(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return self._forward_without_toggles(super().forward_exploration, batch, **kwargs)

    @override(DefaultPPOTorchRLModule)
    def forward_inference(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return self._forward_without_toggles(super().forward_inference, batch, **kwargs)

    def _forward_without_toggles(self, rllib_forward: Any, batch: dict[str, Any],
                                 **kwargs: Any) -> dict[str, Any]:
        """RLlib's no-grad forward minus its eval()/train() walk, when that walk is a no-op."""
        if not self._mode_free:
            return rllib_forward(batch, **kwargs)
        with torch.no_grad():
            return self._forward(batch, **kwargs)

    @override(DefaultPPOTorchRLModule)
    def forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        if not self._mode_free:
            return super().forward_train(batch, **kwargs)
        if self.inference_only:
            raise RuntimeError("forward_train on an inference-only module")
        return self._forward_train(batch, **kwargs)
