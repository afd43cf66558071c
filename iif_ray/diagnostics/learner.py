"""The IIF learner with the inspection hooks diagnostics need, and nothing else changed.

Training code never needs to look inside a round; a targeted intervention does: it retrains
one round with a chosen keep mask, reads the round's scores, and measures the target after
the update. Those hooks live here, so the training learner carries none of them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ray.rllib.utils.annotations import override

from iif_ray.rllib import IIFConfig, IIFPPOTorchLearner
from iif_ray.rllib.influence_round import RoundContext, RoundResult
from iif_ray.rllib.results import DEFAULT_MODULE


class DiagnosticLearner(IIFPPOTorchLearner):
    """:class:`IIFPPOTorchLearner` that keeps the latest round for inspection.

    Attributes:
        forced_keep: a keep mask over the next round's real records that replaces the
            selection rule for that round only (then reset to ``None``).
        last_scores: the latest scored round's scores, in record order.
        last_direction: ``{"local", "global", "n"}``: this learner's target gradient, the
            all-reduced one the scores used, and the record count.
        last_target_batch: the batch the target saw in the latest scored round.
    """

    @override(IIFPPOTorchLearner)
    def build(self) -> None:
        super().build()
        self.forced_keep: np.ndarray | None = None
        self.last_scores: np.ndarray | None = None
        self.last_direction: dict[str, Any] | None = None
        self.last_target_batch: dict[str, torch.Tensor] | None = None

    @override(IIFPPOTorchLearner)
    def round_context(self, module_id: str) -> RoundContext:
        ctx = super().round_context(module_id)
        ctx.keep_override, self.forced_keep = self.forced_keep, None
        return ctx

    @override(IIFPPOTorchLearner)
    def after_round(self, module_id: str, result: RoundResult) -> None:
        if result.scores is not None:
            self.last_scores = result.scores
            self.last_direction = result.direction
            self.last_target_batch = result.target_batch

    def target_value(self, module_id: str = DEFAULT_MODULE) -> float:
        """The target at the current parameters, on the latest scored round's batch.

        A targeted intervention reads it after each retrained update, to measure what the
        removal did to the target (e.g. the probe action's log-probability).

        Raises:
            ValueError: no round has been scored yet.
        """
        if self.last_target_batch is None:
            raise ValueError("no round has been scored yet")
        policy = self.functional_policy(module_id)
        with torch.no_grad():
            return float(self._target(policy.bind(policy.params()), self.last_target_batch))


def with_diagnostic_learner(config: IIFConfig) -> IIFConfig:
    """``config`` with :class:`DiagnosticLearner` as its learner class."""
    return config.learners(learner_class=DiagnosticLearner)
