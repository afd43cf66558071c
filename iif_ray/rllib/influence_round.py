"""One influence round for one module's batch: score -> select -> drop -> metrics -> ledger.

:func:`influence_round` reads top to bottom as the method does. Everything it needs from the
learner arrives in a :class:`RoundContext`; it returns the kept batch, the round's metrics and
its ledger columns in a :class:`RoundResult`, so the learner only wires it in and keeps state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import tree
from ray.rllib.core.columns import Columns
from scipy.stats import spearmanr

from iif_ray.attribution import FunctionalPolicy, RecordBatch, Target, select, target_gradient
from iif_ray.ledger import ledger_columns
from iif_ray.rllib.connectors.standardised_gae import ADVANTAGES_RAW
from iif_ray.rllib.settings import AttributionSettings
from iif_ray.scoring import Scorer, ScoringFailedError

logger = logging.getLogger(__name__)

SCORE_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
_RECORD_COLUMNS = (Columns.OBS, Columns.ACTIONS, Columns.ACTION_LOGP, Columns.ADVANTAGES,
                   ADVANTAGES_RAW)


@dataclass
class RoundContext:
    """What one round needs from the learner that runs it."""

    settings: AttributionSettings
    module_id: str
    round_index: int
    env_steps: int
    learner_rank: int
    policy: FunctionalPolicy | None  # None when the settings do not score (plain PPO)
    target: Target
    scorer: Scorer | None
    entropy_coeff: float
    select_rng: np.random.Generator
    shuffle_rng: np.random.Generator
    # Averages the target gradient over learners (identity with one learner).
    reduce_direction: Callable[[dict[str, torch.Tensor], int], dict[str, torch.Tensor]]
    # Assemble ledger columns (only when a ledger is written: they cost a host copy).
    with_ledger: bool = False
    # A keep mask over the real records that replaces the selection rule for this round.
    keep_override: np.ndarray | None = None


@dataclass
class RoundResult:
    """The kept batch and everything the round measured."""

    batch: dict
    metrics: dict[str, float]
    # Columns of iif_ray.ledger, one entry per real record (None: ctx.with_ledger is off).
    ledger: dict[str, np.ndarray] | None
    obs: np.ndarray | None  # the real records' observations, when the ledger keeps them
    scores: np.ndarray | None  # None when not scored (plain PPO, or a failed round)
    target_batch: dict[str, torch.Tensor] | None = None
    direction: dict[str, Any] | None = None  # {"local", "global", "n"}


def influence_round(cols: dict, episodes: list, ctx: RoundContext) -> RoundResult:
    """Score, select and drop the rows of one module's train batch.

    Args:
        cols: the module's batch after GAE (phantom bootstrap rows marked by ``loss_mask``).
        episodes: the episodes behind the rows, in row order (for the ledger's provenance).
        ctx: the learner's state for this round.

    Returns:
        A :class:`RoundResult` whose ``batch`` holds only kept real rows, shuffled when the
        settings ask for it, without ``loss_mask``.

    Raises:
        ScoringFailedError: scoring failed and ``scoring_fallback="raise"``.
        ValueError: a ``keep_override`` of the wrong length.
    """
    t_start = time.perf_counter()
    settings = ctx.settings
    real_idx = np.flatnonzero(_numpy(cols[Columns.LOSS_MASK]).astype(bool))
    n = len(real_idx)
    real = _take_rows({k: cols[k] for k in _RECORD_COLUMNS}, real_idx)
    adv_std = _numpy(real[Columns.ADVANTAGES])
    metrics: dict[str, float] = {"num_records": float(n)}

    # 1. score
    scored = _score(real, adv_std, ctx, metrics) if settings.scores and n else None
    scores = scored[0] if scored is not None else None

    # 2. select
    if ctx.keep_override is not None:
        if len(ctx.keep_override) != n:
            raise ValueError(f"keep override has {len(ctx.keep_override)} entries "
                             f"for {n} records")
        keep = np.asarray(ctx.keep_override, dtype=bool)
    elif settings.filters and scores is not None:
        sel = select(scores, settings.selection, settings.drop_fraction, advantages=adv_std,
                     rng=ctx.select_rng, round_index=ctx.round_index, min_keep=settings.min_keep)
        keep = sel.keep
        metrics["clamped"] = float(sel.clamped)
    else:
        keep = np.ones(n, dtype=bool)

    # 3. drop (and shuffle: RLlib's first epoch would otherwise run in collection order)
    kept_idx = real_idx[keep]
    if settings.shuffle_first_epoch:
        kept_idx = kept_idx[ctx.shuffle_rng.permutation(len(kept_idx))]
    out = _take_rows(cols, kept_idx)
    # Every kept row is real, so the loss mask is all ones: without it RLlib's PPO loss
    # takes plain means instead of boolean-indexed ones (same values, a faster update).
    out.pop(Columns.LOSS_MASK, None)

    # 4. metrics
    metrics["num_dropped"] = float(n - len(kept_idx))
    metrics["frac_dropped"] = float(n - len(kept_idx)) / max(n, 1)

    # 5. ledger rows
    ledger = obs = None
    if ctx.with_ledger:
        ledger = _ledger_rows(cols, real_idx, episodes, ctx, keep,
                              scores if scores is not None else np.full(n, np.nan, np.float32))
        obs = _numpy(real[Columns.OBS]) if settings.ledger_obs else None
    metrics["filter_s"] = time.perf_counter() - t_start
    return RoundResult(batch=out, metrics=metrics, ledger=ledger, obs=obs, scores=scores,
                       target_batch=scored[1] if scored else None,
                       direction=scored[2] if scored else None)


def _score(real: dict, adv_std: np.ndarray, ctx: RoundContext, metrics: dict[str, float]
           ) -> tuple[np.ndarray, dict, dict] | None:
    """``(scores, target batch, directions)`` of the real records, or None when scoring
    failed and the user chose to train unfiltered (logged every time)."""
    if not torch.is_tensor(real[Columns.OBS]):
        raise ValueError("influence scoring needs tensor observations; wrap dict "
                         "observation spaces (see iif_ray.envs)")
    t0 = time.perf_counter()
    n = len(adv_std)
    target_batch = {
        "obs": real[Columns.OBS],
        "actions": real[Columns.ACTIONS],
        "logp_old": real[Columns.ACTION_LOGP],
        "advantages": real[Columns.ADVANTAGES],
        "advantages_raw": real[ADVANTAGES_RAW],
    }
    value, local_direction = target_gradient(ctx.policy, ctx.target, target_batch)
    direction = ctx.reduce_direction(local_direction, n)
    records = RecordBatch(real[Columns.OBS], real[Columns.ACTIONS],
                          real[Columns.ACTION_LOGP], real[Columns.ADVANTAGES])
    try:
        result = ctx.scorer.score(ctx.policy, records, direction,
                                  entropy_coeff=ctx.entropy_coeff, module_id=ctx.module_id)
    except ScoringFailedError as e:
        if ctx.settings.scoring_fallback == "raise":
            raise ScoringFailedError(f"round {ctx.round_index}: {e}") from e
        logger.warning("round %d: scoring failed (%s); this round trains UNFILTERED "
                       "because scoring_fallback='train-unfiltered'", ctx.round_index, e)
        metrics["scoring_failed"] = 1.0
        return None
    scores = result.scores
    metrics.update(
        scoring_s=time.perf_counter() - t0,
        transfer_s=result.transfer_s,
        scorer_retries=float(result.retries),
        records_per_s=n / max(result.seconds, 1e-9),
        target_value=float(value),
        frac_negative=float((scores < 0).mean()),
        scoring_failed=0.0,
        **{f"score_q{int(q * 100):02d}": float(v)
           for q, v in zip(SCORE_QUANTILES, np.quantile(scores, SCORE_QUANTILES),
                           strict=True)},
    )
    metrics["spearman_score_adv"] = (
        float(spearmanr(scores, adv_std).statistic) if n > 2 else float("nan"))
    return scores, target_batch, {"local": local_direction, "global": direction, "n": n}


def _ledger_rows(cols: dict, real_idx: np.ndarray, episodes: list, ctx: RoundContext,
                 keep: np.ndarray, scores: np.ndarray) -> dict[str, np.ndarray]:
    ep_ids, ts = _provenance(episodes, len(cols[Columns.LOSS_MASK]))

    def real(name: str) -> np.ndarray:
        return _numpy(cols[name])[real_idx]

    return ledger_columns(
        iteration=ctx.round_index, env_steps=ctx.env_steps, learner=ctx.learner_rank,
        episode_id=ep_ids[real_idx], t=ts[real_idx], action=real(Columns.ACTIONS),
        reward=real(Columns.REWARDS), advantage=real(ADVANTAGES_RAW),
        advantage_std=real(Columns.ADVANTAGES), value_target=real(Columns.VALUE_TARGETS),
        logp=real(Columns.ACTION_LOGP), score=scores, kept=keep,
    )


def _provenance(episodes: list, num_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Episode id and timestep of every batch row (episodes arrive in row order)."""
    lens = [len(e) for e in episodes]
    if sum(lens) != num_rows:
        logger.warning("episode lengths (%d) do not match batch rows (%d); ledger provenance "
                       "left blank", sum(lens), num_rows)
        return np.full(num_rows, "", dtype=object), np.full(num_rows, -1, dtype=np.int64)
    ids = np.repeat(np.array([str(e.id_) for e in episodes], dtype=object), lens)
    ts = np.concatenate([e.t_started + np.arange(n) for e, n in zip(episodes, lens, strict=True)])
    return ids, ts.astype(np.int64)


def _take_rows(cols: Mapping, index: np.ndarray) -> dict:
    """Rows ``index`` of every column (tensors, arrays, nested dicts alike)."""
    cache: dict[Any, torch.Tensor] = {}

    def take(x: Any) -> Any:
        if torch.is_tensor(x):
            if x.device not in cache:
                cache[x.device] = torch.as_tensor(index, device=x.device, dtype=torch.long)
            return x[cache[x.device]]
        if isinstance(x, np.ndarray):
            return x[index]
        return x

    return tree.map_structure(take, dict(cols))


def _numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()
