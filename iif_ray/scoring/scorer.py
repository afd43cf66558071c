"""The ``Scorer`` protocols, and the in-process scorer of classic records.

A scorer computes one round's influence scores. For classic RL records (:class:`Scorer`),
:class:`LocalScorer` runs the attribution code in the learner's own process and
:class:`~iif_ray.scoring.pool.AttributionPool` spreads contiguous shards over Ray actors.
For sequence records (:class:`SequenceScorer`, the LM engine), the learner actor scores
them itself or a pool of scorer actors does (``iif_ray.lm.scorers``). Either way both
return scores in record order with the same figures, so whoever holds a scorer never asks
which one it is.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from torch import Tensor

from iif_ray.attribution import FunctionalPolicy, RecordBatch, score_records
from iif_ray.attribution.sequence import SequenceBatch


class ScoringFailedError(RuntimeError):
    """A round's scores could not be computed; the round must not train silently unfiltered."""


@dataclass
class ScoreResult:
    scores: np.ndarray  # float32, record order
    seconds: float  # wall-clock of the whole scoring call
    transfer_s: float = 0.0  # time spent moving weights/rows/scores
    retries: int = 0
    shard_sizes: list[int] = field(default_factory=list)


class Scorer(Protocol):
    """Computes ``-<grad l_j, direction>`` for every record, in record order."""

    def score(
        self,
        policy: FunctionalPolicy,
        records: RecordBatch,
        direction: Mapping[str, Tensor],
        *,
        entropy_coeff: float,
        module_id: str = "default_policy",
    ) -> ScoreResult: ...

    def shutdown(self) -> None: ...


class SequenceScorer(Protocol):
    """Scores every row of a round's sequence batch against the target that the validation
    responses and their per-token weights define, at the round's pre-update weights."""

    def score(self, batch: SequenceBatch, validation: SequenceBatch, target_weights: Tensor,
              *, policy_weights: Any) -> Tensor:
        """Scores in row order (CPU); ``policy_weights``: the round's adapter weights (an
        object reference), for scorers that hold a replica of the policy."""
        ...

    def shutdown(self) -> None: ...


@dataclass
class LocalScorer:
    """Scores in-process: the right choice for small networks and buffers."""

    method: str = "jvp"
    chunk_size: int | None = None

    def score(
        self,
        policy: FunctionalPolicy,
        records: RecordBatch,
        direction: Mapping[str, Tensor],
        *,
        entropy_coeff: float,
        module_id: str = "default_policy",
    ) -> ScoreResult:
        t0 = time.perf_counter()
        scores = score_records(policy, records, direction, method=self.method,
                               entropy_coeff=entropy_coeff, chunk_size=self.chunk_size)
        out = scores.float().cpu().numpy()
        return ScoreResult(scores=out, seconds=time.perf_counter() - t0,
                           shard_sizes=[len(records)])

    def shutdown(self) -> None:
        pass
