"""A policy as a pure function of its parameters.

Influence scores are derivatives with respect to the *policy* parameters only. Wrapping the
policy network as ``(params, obs) -> distribution inputs`` lets ``torch.func`` take gradients,
JVPs and per-sample gradients without touching module state, and keeps this package free of
any RLlib or Ray import.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from torch import Tensor, nn
from torch.func import functional_call

from iif_ray.attribution.distributions import ActionDistribution

ParamDict = dict[str, Tensor]


@dataclass(frozen=True)
class FunctionalPolicy:
    """``net`` maps a batch of observations to distribution inputs; ``dist`` reads them."""

    net: nn.Module
    dist: ActionDistribution

    def params(self) -> ParamDict:
        """Detached current parameters: the point theta_k at which everything is evaluated."""
        return {k: v.detach() for k, v in self.net.named_parameters()}

    def dist_inputs(self, params: Mapping[str, Tensor], obs: Tensor) -> Tensor:
        return functional_call(self.net, dict(params), (obs,))

    def logp(self, params: Mapping[str, Tensor], obs: Tensor, actions: Tensor) -> Tensor:
        return self.dist.logp(self.dist_inputs(params, obs), actions)

    def entropy(self, params: Mapping[str, Tensor], obs: Tensor) -> Tensor:
        return self.dist.entropy(self.dist_inputs(params, obs))

    def bind(self, params: Mapping[str, Tensor]) -> PolicyView:
        return PolicyView(self, params)

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.net.parameters())


@dataclass(frozen=True)
class PolicyView:
    """The policy at fixed parameters: what a target function sees.

    Custom targets only call these methods, so the same target code works under
    ``torch.func.grad`` (parameters being differentiated) and at plain evaluation.
    """

    policy: FunctionalPolicy
    params: Mapping[str, Tensor]

    def dist_inputs(self, obs: Tensor) -> Tensor:
        return self.policy.dist_inputs(self.params, obs)

    def logp(self, obs: Tensor, actions: Tensor) -> Tensor:
        return self.policy.logp(self.params, obs, actions)

    def entropy(self, obs: Tensor) -> Tensor:
        return self.policy.entropy(self.params, obs)

