"""Who computes a round's influence scores: in-process, or a pool of Ray actors.

``scorer`` holds the :class:`Scorer` and :class:`SequenceScorer` protocols and
:class:`LocalScorer`; ``pool`` holds the
:class:`~iif_ray.scoring.pool.AttributionPool` of scorer actors (imported from there, so that
in-process scoring never imports Ray).
"""

from iif_ray.scoring.scorer import (
    LocalScorer,
    Scorer,
    ScoreResult,
    ScoringFailedError,
    SequenceScorer,
)

__all__ = ["LocalScorer", "ScoreResult", "Scorer", "ScoringFailedError", "SequenceScorer"]
