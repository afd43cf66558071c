"""Exact influence scores ``I_j = -<grad l_j(theta_k), grad f(theta_k)>`` of classic records.

Two exact methods:

* ``jvp`` (default): for one target direction ``v = grad f``, the whole score vector is one
  forward-mode Jacobian-vector product of the per-record loss vector. Cost is about one
  forward pass over the buffer; memory is O(n + params).
* ``per-sample``: materialise per-record gradients with ``vmap(grad)`` in chunks and take the
  inner products. Slower, but the gradient vectors are there for diagnostics.

Positive scores are helpful: one gradient-descent step on record j alone changes the target by
about ``eta * I_j``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
from torch import Tensor
from torch.func import grad, jvp, vmap

from iif_ray.attribution.losses import RecordBatch, ppo_record_losses
from iif_ray.attribution.policy import FunctionalPolicy, ParamDict

SCORING_METHODS = ("jvp", "per-sample")


def _chunks(n: int, chunk_size: int | None) -> Iterator[tuple[int, int]]:
    step = n if not chunk_size or chunk_size <= 0 else chunk_size
    for start in range(0, n, max(step, 1)):
        yield start, min(start + step, n)


def _matching_direction(params: ParamDict, direction: Mapping[str, Tensor]) -> ParamDict:
    missing = set(params) - set(direction)
    if missing:
        raise ValueError(f"target direction lacks policy parameters: {sorted(missing)[:5]}")
    return {k: direction[k].to(params[k].device, params[k].dtype) for k in params}


def jvp_scores(
    policy: FunctionalPolicy,
    records: RecordBatch,
    direction: Mapping[str, Tensor],
    *,
    entropy_coeff: float = 0.0,
    chunk_size: int | None = None,
) -> Tensor:
    """Scores via ``-jvp(theta -> [l_1..l_n](theta), theta_k, v)``; shape ``[n]``."""
    params = policy.params()
    tangent = _matching_direction(params, direction)
    out = []
    for start, stop in _chunks(len(records), chunk_size):
        chunk = records.slice(start, stop)

        def losses(p: ParamDict, chunk: RecordBatch = chunk) -> Tensor:
            return ppo_record_losses(policy, p, chunk, entropy_coeff)

        _, dl = jvp(losses, (params,), (tangent,))
        out.append(-dl.detach())
    return torch.cat(out) if out else torch.zeros(0)


def per_sample_gradients(
    policy: FunctionalPolicy,
    records: RecordBatch,
    *,
    entropy_coeff: float = 0.0,
) -> ParamDict:
    """Per-record loss gradients ``{name: [n, *param.shape]}``; memory O(n * params)."""
    params = policy.params()

    def one(p: ParamDict, obs: Tensor, act: Tensor, logp_old: Tensor, adv: Tensor) -> Tensor:
        rec = RecordBatch(obs[None], act[None], logp_old[None], adv[None])
        return ppo_record_losses(policy, p, rec, entropy_coeff)[0]

    grads = vmap(grad(one), in_dims=(None, 0, 0, 0, 0))(
        params, records.obs, records.actions, records.logp_old, records.advantages
    )
    return {k: g.detach() for k, g in grads.items()}


def per_sample_scores(
    policy: FunctionalPolicy,
    records: RecordBatch,
    direction: Mapping[str, Tensor],
    *,
    entropy_coeff: float = 0.0,
    chunk_size: int | None = 256,
) -> Tensor:
    """Scores from materialised per-record gradients, ``chunk_size`` records at a time."""
    tangent = _matching_direction(policy.params(), direction)
    out = []
    for start, stop in _chunks(len(records), chunk_size):
        g = per_sample_gradients(policy, records.slice(start, stop), entropy_coeff=entropy_coeff)
        dots = sum((g[k].flatten(1) * tangent[k].flatten()).sum(1) for k in tangent)
        out.append(-dots)
    return torch.cat(out) if out else torch.zeros(0)


def score_records(
    policy: FunctionalPolicy,
    records: RecordBatch,
    direction: Mapping[str, Tensor],
    *,
    method: str = "jvp",
    entropy_coeff: float = 0.0,
    chunk_size: int | None = None,
) -> Tensor:
    """Influence scores ``I_j = -<grad l_j(theta_k), direction>`` of every record.

    Args:
        policy: the policy network at theta_k, as a functional policy.
        records: the round's records (observations, actions, old log-probs, advantages as
            the loss uses them).
        direction: the target gradient (:func:`~iif_ray.attribution.target_gradient`).
        method: one of :data:`SCORING_METHODS`: ``jvp`` (one forward-mode pass, the default)
            or ``per-sample`` (per-record gradients, same numbers, more memory).
        entropy_coeff: the PPO loss's entropy coefficient, part of each record's loss.
        chunk_size: records per chunk, bounding memory; ``None`` scores in one piece.

    Returns:
        A ``[n]`` tensor in record order; positive helps the target, negative harms it.

    Raises:
        ValueError: an unknown method.
    """
    if method == "jvp":
        return jvp_scores(policy, records, direction, entropy_coeff=entropy_coeff,
                          chunk_size=chunk_size)
    if method == "per-sample":
        return per_sample_scores(policy, records, direction, entropy_coeff=entropy_coeff,
                                 chunk_size=chunk_size or 256)
    raise ValueError(f"unknown scoring method {method!r}; accepted: {list(SCORING_METHODS)}")
