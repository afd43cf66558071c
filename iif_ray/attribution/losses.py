"""The per-record PPO training loss at the pre-update policy.

For record j, ``l_j(theta) = -r_j(theta) * Ahat_j - c_ent * H_j(theta)`` with
``r_j = exp(logp_theta(a_j|s_j) - logp_j)``. At theta_k the ratio is 1, so PPO's clipping is
inactive and this loss has the same gradient as the clipped one. The KL penalty (if enabled)
has zero gradient at theta_k and the value loss does not touch policy parameters, so neither
appears here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

from torch import Tensor

from iif_ray.attribution.policy import FunctionalPolicy


@dataclass(frozen=True)
class RecordBatch:
    """The rows being scored, all tensors with the same leading dimension ``n``.

    ``advantages`` are the standardised advantages the PPO update uses, not the raw ones.
    """

    obs: Tensor
    actions: Tensor
    logp_old: Tensor
    advantages: Tensor

    def __len__(self) -> int:
        return int(self.actions.shape[0])

    def slice(self, start: int, stop: int) -> RecordBatch:
        return RecordBatch(**{f.name: getattr(self, f.name)[start:stop] for f in fields(self)})

    def to(self, device) -> RecordBatch:
        return RecordBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


def ppo_record_losses(
    policy: FunctionalPolicy,
    params: Mapping[str, Tensor],
    records: RecordBatch,
    entropy_coeff: float = 0.0,
) -> Tensor:
    """Vector of per-record losses ``[l_1, ..., l_n]`` at ``params``."""
    inputs = policy.dist_inputs(params, records.obs)
    logp = policy.dist.logp(inputs, records.actions)
    loss = -(logp - records.logp_old).exp() * records.advantages
    if entropy_coeff:
        loss = loss - entropy_coeff * policy.dist.entropy(inputs)
    return loss
