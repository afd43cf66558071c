"""The LM engine's two :class:`~iif_ray.scoring.scorer.SequenceScorer` s: the learner actor
scoring the rows itself, or a pool of scorer actors sharing them out. The trainer holds one
and never asks which.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import ray
import torch

from iif_ray.attribution.sequence import SequenceBatch
from iif_ray.lm.spec import LMRunSpec
from iif_ray.lm.workers import device_for, scoring_model
from iif_ray.scoring.pool import ScorerWorker, ShardedActors

_MODULE = "lm"  # the one policy a scorer actor holds


class LearnerScorer:
    """Scores in the learner actor, which holds the round's weights already (no replica)."""

    def __init__(self, learner: Any, method: str) -> None:
        self._learner = learner
        self._method = method

    def score(self, batch: SequenceBatch, validation: SequenceBatch, target_weights: torch.Tensor,
              *, policy_weights: Any) -> torch.Tensor:
        return ray.get(self._learner.scores.remote(batch, validation, target_weights,
                                                   self._method))

    def shutdown(self) -> None:
        pass


class ActorPoolScorer:
    """Scorer actors sharing out a round's rows (the classic engine's
    :class:`~iif_ray.scoring.pool.ShardedActors`, so a scorer that dies or hangs is replaced
    and its shard re-scored; a shard that keeps failing fails the round, which never trains
    silently unfiltered). The learner computes the target gradient once; each scorer scores
    a contiguous shard with the loss denominators fixed to the whole batch first, so the
    shards add up to the learner's own scores."""

    def __init__(self, spec: LMRunSpec, learner: Any, n: int, *, num_cpus: float = 1.0,
                 num_gpus: float = 0.0, start_timeout_s: float = 120.0,
                 timeout_s: float = 300.0, max_retries: int = 2) -> None:
        device = device_for(num_gpus)
        self._learner = learner
        self._method = spec.scoring_method
        self._loss = spec.update.policy_loss()
        self._actors = ShardedActors(
            ScorerWorker, ({_MODULE: partial(scoring_model, spec, device)}, device), n,
            num_cpus=num_cpus, num_gpus=num_gpus, timeout_s=timeout_s,
            max_retries=max_retries, start_timeout_s=start_timeout_s,
            no_room_hint="Beside the rollout and learner actors: lower --num-scorers or "
                         "--cpus-per-scorer, or use --num-scorers 0 to score in the learner.")

    @property
    def actors(self) -> list:
        return self._actors.actors

    @property
    def total_retries(self) -> int:
        return self._actors.total_retries

    def score(self, batch: SequenceBatch, validation: SequenceBatch, target_weights: torch.Tensor,
              *, policy_weights: Any) -> torch.Tensor:
        loss = self._loss.for_batch(batch)
        target = self._learner.target.remote(validation, target_weights)
        head = self._learner.value_head_weights.remote() if loss.vf_coef else None
        # Resolved first: the scorers' clocks start with their own work, and a learner
        # failure surfaces as the learner's, not as dying scorers.
        ray.get(target)

        def call(actor: Any, start: int, stop: int) -> Any:
            return actor.score_sequences.remote(_MODULE, policy_weights, target,
                                                batch.select(list(range(start, stop))), loss,
                                                self._method, head)

        return torch.cat(self._actors.run(len(batch.input_ids), call).results)

    def shutdown(self) -> None:
        self._actors.shutdown()
