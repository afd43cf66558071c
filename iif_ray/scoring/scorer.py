"""The ``Scorer`` protocol, and the in-process scorer.

A scorer computes one round's influence scores. :class:`LocalScorer` runs the attribution
code in the learner's own process; :class:`~iif_ray.scoring.pool.AttributionPool` spreads
contiguous shards over Ray actors. Both return scores in record order with the same figures,
so the learner does not care which one it holds.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from torch import Tensor

from iif_ray.attribution import FunctionalPolicy, RecordBatch, score_records


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
