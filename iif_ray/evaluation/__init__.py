"""Policy evaluation precise enough to compare algorithms (Ray-free: gymnasium and torch).

* :mod:`.exact`: the stochastic policy's expected episode return by dynamic programming, for
  environments whose dynamics are a finite table (FrozenLake) or can be enumerated with the
  environment's own step function (MiniGrid-Empty). No evaluation variance at all.
* :mod:`.montecarlo`: complete episodes on a fixed list of seeds, with action noise drawn from
  per-episode generators, so every policy meets the same starts and the same random draws
  (common random numbers: paired differences cancel most of the noise).
* :mod:`.sampler`: the policy as these evaluators see it (probabilities, or actions from
  given uniform noise).
* :mod:`.flips`: corrupted rewards as ground truth for a filter (which flips harm; AUROC and
  precision@k of the scores that should find them).
"""

from iif_ray.evaluation.exact import FiniteMDP, expected_return, finite_mdp, supports_exact
from iif_ray.evaluation.montecarlo import (
    EpisodeReturns,
    episode_seeds,
    rollout_returns,
    standard_error,
)
from iif_ray.evaluation.sampler import PolicySampler

__all__ = ["EpisodeReturns", "FiniteMDP", "PolicySampler", "episode_seeds", "expected_return",
           "finite_mdp", "rollout_returns", "standard_error", "supports_exact"]
