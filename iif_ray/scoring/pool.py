"""The attribution actor pool: score a round's records on Ray actors, in parallel.

:class:`ShardedActors` is the payload-agnostic part (actors, contiguous shards, start-up
bound, timeouts, replacement); :class:`AttributionPool` scores classic RL records on it, and
the LM engine's sequence scorer pool (``iif_ray.lm.scorers.ActorPoolScorer``) uses it too.
Both engines' scorer actors have one body, :class:`ScorerWorker`.

Protocol per round:

1. the policy weights and the target direction go to the object store once (``ray.put``);
2. the records are cut into contiguous shards, one per scorer;
3. every scorer loads the weights into its own replica of the policy network (built once by
   a picklable builder, e.g. from an RLModule spec), scores its shard with the same code as
   local scoring, and returns float32 scores;
4. the pool concatenates them in record order.

A scorer that dies, or takes longer than ``timeout_s`` on a shard, is killed, replaced, and
its shard re-scored; scores are a pure function of (weights, direction, shard), so the round's
result is identical to an undisturbed one. A shard that still fails after ``max_retries``
raises :class:`ScoringFailedError` naming the shard and the cause.

Scorer actors are created with default scheduling options. Under Tune they are captured by
the trial's placement group, where :class:`~iif_ray.rllib.algorithm.IIFPPO` reserves a
bundle for each; outside Tune they go wherever the cluster has room, other nodes included.
Either way the pool waits at most ``start_timeout_s`` for them to start and fails with an
explanation rather than hanging.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
import torch
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError
from torch import Tensor

from iif_ray.attribution import FunctionalPolicy, RecordBatch, score_records
from iif_ray.attribution.sequence import PolicyLoss, SequenceBatch, parameter_set, sequence_scores
from iif_ray.scoring.scorer import ScoreResult, ScoringFailedError

logger = logging.getLogger(__name__)

_RECORD_FIELDS = ("obs", "actions", "logp_old", "advantages")


# A builder returns a FunctionalPolicy (classic records) or a peft causal LM (sequences).
PolicyBuilders = Mapping[str, Callable[[], Any]]


class ScorerWorker:
    """Body of a scorer actor of either engine: replicas of the policy networks, built
    lazily per module; :meth:`score` scores classic records, :meth:`score_sequences` LM
    sequences.

    Builders, not networks, travel to the actor: a builder (for RLlib, a partial of
    :func:`iif_ray.rllib.module_bridge.policy_from_spec`; for the LM engine, of
    ``iif_ray.lm.workers.scoring_model``) is small to pickle and lets this package stay
    free of any one framework's module classes.
    """

    def __init__(self, policy_builders: PolicyBuilders, device: str = "cpu") -> None:
        self._builders = dict(policy_builders)
        self._device = torch.device(device)
        self._policies: dict[str, FunctionalPolicy] = {}

    def info(self) -> dict[str, Any]:
        """Where this scorer runs; also builds its replicas so round 1 pays no start-up."""
        for module_id in self._builders:
            self._policy(module_id)
        return actor_placement(str(self._device))

    def _policy(self, module_id: str) -> Any:
        if module_id not in self._policies:
            policy = self._builders[module_id]()
            (policy.net if isinstance(policy, FunctionalPolicy) else policy).to(self._device)
            self._policies[module_id] = policy
        return self._policies[module_id]

    def score(self, module_id: str, weights: Mapping[str, np.ndarray],
              direction: Mapping[str, np.ndarray], shard: Mapping[str, np.ndarray],
              entropy_coeff: float, method: str, chunk_size: int | None
              ) -> tuple[np.ndarray, float]:
        t0 = time.perf_counter()
        policy = self._policy(module_id)
        with torch.no_grad():
            for name, p in policy.net.named_parameters():
                p.copy_(torch.as_tensor(weights[name]))
        dev = self._device
        records = RecordBatch(**{k: torch.as_tensor(shard[k], device=dev) for k in _RECORD_FIELDS})
        tangent = {k: torch.as_tensor(v, device=dev) for k, v in direction.items()}
        scores = score_records(policy, records, tangent, method=method,
                               entropy_coeff=entropy_coeff, chunk_size=chunk_size)
        return scores.float().cpu().numpy(), time.perf_counter() - t0

    def score_sequences(self, module_id: str, weights: Mapping[str, Tensor],
                        target: Mapping[str, Tensor], shard: SequenceBatch, loss: PolicyLoss,
                        method: str, value_head: Mapping[str, Tensor] | None = None
                        ) -> Tensor:
        """Scores of a shard of a round's sequences against the target gradient, with the
        LoRA adapters set to ``weights`` and ``loss``'s denominators fixed to the whole
        round's batch (so the shards add up to the learner's own scores). ``value_head``:
        the weight and bias of the learner's linear value head, which a loss with a value
        term (``loss.vf_coef > 0``) needs."""
        model = self._policy(module_id)
        model.load_state_dict(weights, strict=False)
        dev = self._device
        target = {k: v.to(dev) for k, v in target.items()}
        head = None
        if value_head is not None:
            w = value_head["weight"]
            head = torch.nn.Linear(w.shape[1], w.shape[0]).to(dev)
            head.load_state_dict({k: v.to(dev) for k, v in value_head.items()})
        return sequence_scores(model, parameter_set(model, "lora"), shard.to(dev), loss,
                               target, method, value_head=head).cpu()


def actor_placement(device: str = "cpu") -> dict[str, Any]:
    """Where the calling actor runs: what a pool's ``info()`` reports (and logs) per actor."""
    ctx = ray.get_runtime_context()
    return {"node_id": ctx.get_node_id(), "pid": os.getpid(), "device": device,
            "placement_group": ctx.get_placement_group_id()}


@dataclass
class _Shard:
    index: int
    start: int
    stop: int
    attempts: int = 0


@dataclass
class ShardedRun:
    """What :meth:`ShardedActors.run` returns: results in shard order, and how it went."""

    results: list[Any]
    bounds: list[tuple[int, int]]
    retries: int


ShardCall = Callable[[Any, int, int], "ray.ObjectRef"]


class ShardedActors:
    """``n`` actors of one body that share out contiguous shards of a batch, with retries.

    Payload-agnostic: the caller says how to ask an actor for records ``start..stop`` (a
    function returning an ``ObjectRef``) and what to do with the answers. Both attribution
    paths build on it, the classic records' :class:`AttributionPool` and the LM path's
    sequence scorers, so sharding, start-up bounds, timeouts and replacement live once.

    Retrying is only sound because a shard's answer is a pure function of what the call sends
    (weights, target, shard): a replaced actor recomputes exactly what the lost one would have.
    An actor body must define ``info()``, which returns once the actor is ready (and says where
    it runs); the pool waits for it at most ``start_timeout_s``.

    Args:
        worker_cls: the actor body.
        worker_args: its constructor's arguments.
        num_actors: actors in the pool (>= 1).
        num_cpus / num_gpus: each actor's Ray resources.
        timeout_s: a shard without an answer for this long is re-run on a new actor.
        max_retries: re-runs per shard before the batch fails.
        start_timeout_s: how long to wait for actors to start.
        no_room_hint: appended to the "did not start" error: what the user can change.
    """

    def __init__(self, worker_cls: type, worker_args: tuple, num_actors: int, *,
                 num_cpus: float = 1.0, num_gpus: float = 0.0, timeout_s: float = 120.0,
                 max_retries: int = 2, start_timeout_s: float = 120.0,
                 no_room_hint: str = "") -> None:
        if num_actors < 1:
            raise ValueError(f"num_scorers must be >= 1 for a pool, got {num_actors}")
        self._actor_cls = ray.remote(worker_cls).options(
            num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=0)
        self._args = worker_args
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.start_timeout_s = start_timeout_s
        self._no_room_hint = no_room_hint
        self.actors = [self._actor_cls.remote(*worker_args) for _ in range(num_actors)]
        self.actor_info = self._wait_started(self.actors)
        self.total_retries = 0

    def _wait_started(self, actors: list) -> list[dict]:
        refs = [a.info.remote() for a in actors]
        try:
            return ray.get(refs, timeout=self.start_timeout_s)
        except RayActorError as e:
            for a in actors:
                ray.kill(a)
            raise ScoringFailedError(f"scorer actor(s) failed to start: {e}") from e
        except GetTimeoutError:
            for a in actors:
                ray.kill(a)
            raise ScoringFailedError(
                f"{len(actors)} scorer actor(s) did not start within {self.start_timeout_s:.0f} s: "
                f"the cluster (or, under Tune, the trial's placement group) has no room for them. "
                f"{self._no_room_hint}".rstrip()) from None

    def _replace(self, i: int) -> None:
        with contextlib.suppress(Exception):  # it may already be dead
            ray.kill(self.actors[i])
        self.actors[i] = self._actor_cls.remote(*self._args)
        self.actor_info[i] = self._wait_started([self.actors[i]])[0]

    def run(self, n: int, call: ShardCall) -> ShardedRun:
        """Run ``call(actor, start, stop)`` over contiguous shards of ``n`` records.

        Raises:
            ScoringFailedError: a shard failed after ``max_retries`` re-runs, or the actor's
                code raised (deterministic, so a retry could not help).
        """
        bounds = np.linspace(0, n, min(len(self.actors), max(n, 1)) + 1).astype(int)
        shards = [_Shard(i, int(a), int(b)) for i, (a, b) in enumerate(itertools.pairwise(bounds))]
        pending: dict[ray.ObjectRef, tuple[_Shard, float]] = {}

        def submit(shard: _Shard) -> None:
            shard.attempts += 1
            ref = call(self.actors[shard.index], shard.start, shard.stop)
            pending[ref] = (shard, time.perf_counter())

        def where(shard: _Shard) -> str:
            return f"shard {shard.index} (records {shard.start}..{shard.stop - 1} of {n})"

        retries = 0

        def retry(shard: _Shard, cause: str) -> None:
            nonlocal retries
            if shard.attempts > self.max_retries:
                raise ScoringFailedError(
                    f"{where(shard)} failed after {shard.attempts} attempts: {cause}")
            logger.warning("scorer %d failed on shard %d (%s); replacing it and re-scoring",
                           shard.index, shard.index, cause)
            retries += 1
            self._replace(shard.index)
            submit(shard)

        for shard in shards:
            submit(shard)
        results: list[Any] = [None] * len(shards)
        while pending:
            now = time.perf_counter()
            wait_for = max(0.0, min(s + self.timeout_s - now for _, s in pending.values()))
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=wait_for)
            for ref in ready:
                shard, _ = pending.pop(ref)
                try:
                    results[shard.index] = ray.get(ref)
                except RayActorError as e:
                    retry(shard, f"scorer actor died ({type(e).__name__})")
                except RayTaskError as e:
                    raise ScoringFailedError(
                        f"{where(shard)} raised in the scorer: {e.cause!r}") from e
            now = time.perf_counter()
            for ref, (shard, started) in list(pending.items()):
                if now - started > self.timeout_s:
                    del pending[ref]
                    retry(shard, f"no answer within {self.timeout_s:.0f} s")
        self.total_retries += retries
        return ShardedRun(results, [(s.start, s.stop) for s in shards], retries)

    def shutdown(self) -> None:
        for a in self.actors:
            with contextlib.suppress(Exception):
                ray.kill(a)
        self.actors = []


class AttributionPool:
    """``num_scorers`` Ray actors scoring contiguous shards of RL records in parallel.

    Args:
        policy_builders: module id -> picklable zero-argument callable that builds the
            policy network replica (weights are loaded each round).
        num_scorers: actors in the pool (>= 1).
        num_cpus_per_scorer / num_gpus_per_scorer: each actor's Ray resources.
        timeout_s: a shard without an answer for this long is re-scored on a new actor.
        max_retries: re-scorings per shard before the round fails.
        method / chunk_size: passed to :func:`iif_ray.attribution.score_records`.
        start_timeout_s: how long to wait for the actors to start.
        worker_cls: the actor body (tests substitute a failing one).

    Raises:
        ValueError: ``num_scorers < 1``.
        ScoringFailedError: the actors could not start (no room in the cluster or the
            trial's placement group).
    """

    def __init__(
        self,
        policy_builders: PolicyBuilders,
        num_scorers: int,
        *,
        num_cpus_per_scorer: float = 1.0,
        num_gpus_per_scorer: float = 0.0,
        timeout_s: float = 120.0,
        max_retries: int = 2,
        method: str = "jvp",
        chunk_size: int | None = None,
        start_timeout_s: float = 120.0,
        worker_cls: type[ScorerWorker] = ScorerWorker,
    ) -> None:
        device = "cuda" if num_gpus_per_scorer > 0 else "cpu"
        self._actors = ShardedActors(
            worker_cls, (dict(policy_builders), device), num_scorers,
            num_cpus=num_cpus_per_scorer, num_gpus=num_gpus_per_scorer, timeout_s=timeout_s,
            max_retries=max_retries, start_timeout_s=start_timeout_s,
            no_room_hint="Use IIFPPO as the trainable so the scorers get reserved bundles, "
                         "lower num_cpus_per_scorer, or set num_scorers=0 to score in the "
                         "learner process.")
        self.method = method
        self.chunk_size = chunk_size
        logger.info("attribution pool started: %s", self.actor_info)

    @property
    def actors(self) -> list:
        return self._actors.actors

    @property
    def actor_info(self) -> list[dict]:
        return self._actors.actor_info

    @property
    def total_retries(self) -> int:
        return self._actors.total_retries

    def score(
        self,
        policy: FunctionalPolicy,
        records: RecordBatch,
        direction: Mapping[str, Tensor],
        *,
        entropy_coeff: float,
        module_id: str = "default_policy",
    ) -> ScoreResult:
        """Score ``records`` against ``direction`` on the pool; see :class:`Scorer`.

        Raises:
            ScoringFailedError: a shard failed after ``max_retries`` re-scorings, or the
                scoring code raised.
        """
        t0 = time.perf_counter()
        weights_ref = ray.put({k: v.detach().cpu().numpy() for k, v in policy.params().items()})
        direction_ref = ray.put({k: v.detach().cpu().numpy() for k, v in direction.items()})
        host = {f: getattr(records, f).detach().cpu().numpy() for f in _RECORD_FIELDS}
        put_s = time.perf_counter() - t0
        shard_refs: dict[tuple[int, int], ray.ObjectRef] = {}

        def call(actor: Any, start: int, stop: int) -> ray.ObjectRef:
            if (start, stop) not in shard_refs:  # put once, even when re-scored
                shard_refs[start, stop] = ray.put({f: host[f][start:stop] for f in _RECORD_FIELDS})
            return actor.score.remote(module_id, weights_ref, direction_ref,
                                      shard_refs[start, stop], float(entropy_coeff),
                                      self.method, self.chunk_size)

        run = self._actors.run(len(records), call)
        seconds = time.perf_counter() - t0
        compute_s = [c for _, c in run.results]
        scores = (np.concatenate([s for s, _ in run.results]) if run.results
                  else np.zeros(0, np.float32))
        return ScoreResult(
            scores=scores.astype(np.float32, copy=False),
            seconds=seconds,
            # Everything not spent computing on the slowest shard: puts, scheduling, gets.
            transfer_s=max(put_s, seconds - max(compute_s, default=0.0)),
            retries=run.retries,
            shard_sizes=[b - a for a, b in run.bounds],
        )

    def shutdown(self) -> None:
        self._actors.shutdown()
