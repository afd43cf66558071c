"""Pure-torch local data attribution for PPO: losses, targets, exact scorers, selection rules.

Nothing here imports Ray or RLlib, so it can be tested and reused on its own.
"""

from iif_ray.attribution.distributions import (
    ActionDistribution,
    Categorical,
    DiagGaussian,
    make_distribution,
)
from iif_ray.attribution.influence import (
    SCORING_METHODS,
    jvp_scores,
    per_sample_gradients,
    per_sample_scores,
    score_records,
)
from iif_ray.attribution.losses import RecordBatch, ppo_record_losses
from iif_ray.attribution.policy import FunctionalPolicy, ParamDict, PolicyView
from iif_ray.attribution.selection import (
    SELECTION_RULES,
    NonFiniteScoresError,
    Selection,
    check_drop_fraction,
    select,
)
from iif_ray.attribution.targets import (
    TARGETS,
    ActionTarget,
    Target,
    make_target,
    register_target,
    return_target,
    target_gradient,
)

__all__ = [
    "SCORING_METHODS",
    "SELECTION_RULES",
    "TARGETS",
    "ActionDistribution",
    "ActionTarget",
    "Categorical",
    "DiagGaussian",
    "FunctionalPolicy",
    "NonFiniteScoresError",
    "ParamDict",
    "PolicyView",
    "RecordBatch",
    "Selection",
    "Target",
    "check_drop_fraction",
    "jvp_scores",
    "make_distribution",
    "make_target",
    "per_sample_gradients",
    "per_sample_scores",
    "ppo_record_losses",
    "register_target",
    "return_target",
    "score_records",
    "select",
    "target_gradient",
]
