"""The policy as the evaluators see it: a batch of observations in, actions or probabilities out.

Monte-Carlo evaluation draws its action noise itself (one generator per episode) and passes it
in, so two policies evaluated on the same episode seeds see the same uniform draws: where their
action probabilities agree they take the same action (inverse-CDF sampling), and the paired
difference of their returns keeps only what differs between the policies.
"""

from __future__ import annotations

import numpy as np
import torch

from iif_ray.attribution.distributions import Categorical, DiagGaussian
from iif_ray.attribution.policy import FunctionalPolicy


class PolicySampler:
    """A :class:`FunctionalPolicy` (categorical or diagonal Gaussian) for evaluation.

    Raises:
        ValueError: (on construction) another action distribution.
    """

    def __init__(self, policy: FunctionalPolicy) -> None:
        if not isinstance(policy.dist, Categorical | DiagGaussian):
            raise ValueError(f"evaluation supports categorical and diagonal-Gaussian policies, "
                             f"got {type(policy.dist).__name__}")
        self.policy = policy
        self.discrete = isinstance(policy.dist, Categorical)

    @torch.no_grad()
    def _inputs(self, obs: np.ndarray) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(obs, dtype=np.float32))
        return self.policy.net(x).to(torch.float64)

    def probabilities(self, obs: np.ndarray) -> np.ndarray:
        """Action probabilities ``[n, num_actions]`` (float64) of a categorical policy."""
        if not self.discrete:
            raise ValueError("probabilities() needs a categorical policy")
        return torch.softmax(self._inputs(obs), dim=-1).numpy()

    def actions(self, obs: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
        """Sample one action per row from given noise ``uniforms`` ``[n, k]`` in [0, 1).

        Categorical: inverse CDF of the first column. Gaussian: ``mean + std * Phi^-1(u)``
        with ``k`` equal to the action size.
        """
        inputs = self._inputs(obs)
        u = torch.as_tensor(np.asarray(uniforms, dtype=np.float64))
        if self.discrete:
            cdf = torch.cumsum(torch.softmax(inputs, dim=-1), dim=-1)
            idx = torch.searchsorted(cdf, u[:, :1].contiguous()).squeeze(-1)
            return idx.clamp(max=cdf.shape[-1] - 1).numpy()
        mean, log_std = torch.chunk(inputs, 2, dim=-1)
        z = torch.special.ndtri(u.clamp(1e-12, 1 - 1e-12))
        return (mean + torch.exp(log_std) * z).to(torch.float32).numpy()

    def action_size(self, obs: np.ndarray) -> int:
        """How many uniforms :meth:`actions` needs per row (read from one forward pass)."""
        width = int(self._inputs(obs[:1]).shape[-1])
        return 1 if self.discrete else width // 2
