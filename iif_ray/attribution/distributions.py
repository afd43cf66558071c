"""Action distributions written with plain tensor ops.

They mirror RLlib's ``TorchCategorical`` and ``TorchDiagGaussian`` (checked in the tests), but
avoid ``torch.distributions`` so that forward-mode AD (``torch.func.jvp``) and ``vmap`` work
on every op without surprises.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
from torch import Tensor

_LOG_2PI = math.log(2.0 * math.pi)


class ActionDistribution(Protocol):
    """Maps a policy head's output ("distribution inputs") to log-probs and entropies."""

    name: str

    def logp(self, inputs: Tensor, actions: Tensor) -> Tensor:
        """Log-probability of ``actions`` per row, shape ``[n]``."""
        ...

    def entropy(self, inputs: Tensor) -> Tensor:
        """Entropy per row, shape ``[n]``."""
        ...


class Categorical:
    """Discrete actions; ``inputs`` are unnormalised logits ``[n, num_actions]``."""

    name = "categorical"

    def logp(self, inputs: Tensor, actions: Tensor) -> Tensor:
        logp_all = torch.log_softmax(inputs, dim=-1)
        return torch.gather(logp_all, -1, actions.long().unsqueeze(-1)).squeeze(-1)

    def entropy(self, inputs: Tensor) -> Tensor:
        logp_all = torch.log_softmax(inputs, dim=-1)
        return -(logp_all.exp() * logp_all).sum(-1)


class DiagGaussian:
    """Continuous actions; ``inputs`` are ``[mean | log_std]`` concatenated, as in RLlib."""

    name = "diag_gaussian"

    def logp(self, inputs: Tensor, actions: Tensor) -> Tensor:
        mean, log_std = torch.chunk(inputs, 2, dim=-1)
        z = (actions.to(mean.dtype) - mean) * torch.exp(-log_std)
        return (-0.5 * z * z - log_std - 0.5 * _LOG_2PI).sum(-1)

    def entropy(self, inputs: Tensor) -> Tensor:
        _, log_std = torch.chunk(inputs, 2, dim=-1)
        return (log_std + 0.5 + 0.5 * _LOG_2PI).sum(-1)


DISTRIBUTIONS: dict[str, type] = {
    Categorical.name: Categorical,
    DiagGaussian.name: DiagGaussian,
}


def make_distribution(name: str) -> ActionDistribution:
    """Build a distribution by registry name; a clear error names the accepted ones."""
    try:
        return DISTRIBUTIONS[name]()
    except KeyError:
        raise ValueError(
            f"unknown action distribution {name!r}; supported: {sorted(DISTRIBUTIONS)}"
        ) from None
