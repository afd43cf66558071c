"""The IIF PPO learner: score every record at theta_k, drop the harmful ones, then run PPO.

Plain PPO (``mode="off"``) takes exactly the same path, minus the scoring: same advantage
standardisation, same removal of phantom bootstrap rows, same first-epoch shuffle, same
optimiser. Comparisons between ``ppo`` and ``iif`` therefore differ only by the filter.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch
import tree
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.core.columns import Columns
from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME
from scipy.stats import spearmanr

from iif_ray.attribution import (
    FunctionalPolicy,
    RecordBatch,
    make_target,
    select,
    target_gradient,
)
from iif_ray.connectors import ADVANTAGES_RAW, InfluenceFilter, StandardisedGAE
from iif_ray.ledger import LedgerWriter
from iif_ray.pool import LocalScorer, Scorer, ScoringFailedError
from iif_ray.rllib_policy import functional_policy
from iif_ray.settings import CONFIG_KEY, AttributionSettings

logger = logging.getLogger(__name__)

OPTIMIZER_KEY = "optimizer"
ADV_NORM_KEY = "advantage_normalization"
ADV_NORMS = ("batch", "minibatch")
OPTIMIZERS = ("adam", "sgd")
SCORE_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
STATE_KEY = "iif_learner_state"


def make_optimizer(params: list, spec: dict[str, Any] | None) -> torch.optim.Optimizer:
    """``{"type": "adam"|"sgd", **kwargs}``; the learning rate comes from RLlib's scheduler."""
    spec = dict(spec or {"type": "adam"})
    kind = spec.pop("type", "adam")
    if kind == "adam":
        return torch.optim.Adam(params, **spec)
    if kind == "sgd":
        return torch.optim.SGD(params, lr=1e-3, **spec)
    raise ValueError(f"optimizer type must be one of {list(OPTIMIZERS)}, got {kind!r}")


def _index_columns(cols: dict, index: np.ndarray) -> dict:
    """Keep rows ``index`` of every column (tensors, arrays, nested dicts alike)."""
    cache: dict[Any, torch.Tensor] = {}

    def take(x: Any) -> Any:
        if torch.is_tensor(x):
            if x.device not in cache:
                cache[x.device] = torch.as_tensor(index, device=x.device, dtype=torch.long)
            return x[cache[x.device]]
        if isinstance(x, np.ndarray):
            return x[index]
        return x

    return tree.map_structure(take, cols)


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


def _numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()


class IIFPPOTorchLearner(PPOTorchLearner):
    """PPO learner with an influence filter between GAE and the minibatch loop."""

    def build(self) -> None:
        super().build()
        self.iif = AttributionSettings.from_dict(self.config.learner_config_dict.get(CONFIG_KEY))
        pipeline = self._learner_connector
        if pipeline is None or not self.config.add_default_connectors_to_learner_pipeline:
            raise ValueError("IIF needs RLlib's default learner connectors "
                             "(add_default_connectors_to_learner_pipeline=True)")
        pipeline.remove("GeneralAdvantageEstimation")
        pipeline.append(StandardisedGAE(gamma=self.config.gamma, lambda_=self.config.lambda_))
        pipeline.append(InfluenceFilter(learner=self))

        self._iif_iteration = 0
        self._env_steps = 0
        seed = self.iif.seed if self.iif.seed is not None else (self.config.seed or 0)
        self._rank = self._dist_rank()
        seq = np.random.SeedSequence([seed, self._rank])
        self._select_rng, self._shuffle_rng = (np.random.default_rng(s) for s in seq.spawn(2))
        self._policies: dict[str, FunctionalPolicy] = {}
        self._scorer: Scorer | None = None
        self._target = make_target(self.iif.target, self.iif.target_options)
        self._ledger = LedgerWriter(self.iif.ledger_dir) if self.iif.ledger_dir else None
        self._update_t0: float | None = None
        self._off_policyness_logged = False
        self.last_direction: dict[str, Any] | None = None  # for inspection and tests
        self.last_scores: np.ndarray | None = None  # the latest round's scores, record order
        self.last_target_batch: dict[str, Any] | None = None  # what the target saw last round
        # Keep mask for the next round only, replacing the selection rule: how a targeted
        # intervention retrains one round without chosen records.
        self.forced_keep: np.ndarray | None = None
        if self.iif.scores and self.iif.num_scorers > 0:
            self._scorer = self._make_scorer()  # start actors now, not inside round 1
        self._modules_this_round: list[str] = []

    # ---- optimiser
    def compute_loss_for_module(self, *, module_id: str, config: Any, batch: dict,
                                fwd_out: dict) -> torch.Tensor:
        """PPO's loss; with ``advantage_normalization="minibatch"`` the raw GAE advantages are
        standardised within each minibatch first, as Stable-Baselines3 (and the paper) do.

        Scoring always uses the buffer-standardised advantages: minibatches are drawn after
        the filter, so their composition is not known when records are scored.
        """
        if self.config.learner_config_dict.get(ADV_NORM_KEY, "batch") == "minibatch":
            raw = batch[ADVANTAGES_RAW]
            mask = batch.get(Columns.LOSS_MASK)
            real = raw[mask.bool()] if mask is not None else raw
            std = real.std() if real.numel() > 1 else raw.new_tensor(1.0)
            batch = dict(batch)
            batch[Columns.ADVANTAGES] = (raw - real.mean()) / (std + 1e-8)
        return super().compute_loss_for_module(module_id=module_id, config=config, batch=batch,
                                               fwd_out=fwd_out)

    def apply_gradients(self, gradients_dict: dict) -> None:
        """RLlib's step, with its nan/inf guard fused into one check.

        RLlib tests every gradient tensor for non-finite values twice per minibatch, two small
        kernel calls per tensor: about a tenth of a PPO update for the paper's 64-64 networks
        on CPU. One fused norm over all gradients is non-finite whenever any entry is; only
        then (or with grad scalers or lr schedulers, which RLlib's step also drives) does
        RLlib's own per-tensor handling run, so the result is the same.
        """
        grads = [g for g in gradients_dict.values() if g is not None]
        if (not grads or self._grad_scalers is not None
                or self._lr_scheduler_classes is not None
                or not bool(torch.stack(torch._foreach_norm(grads)).isfinite().all())):
            super().apply_gradients(gradients_dict)
            return
        for pid, grad in gradients_dict.items():
            self._params[pid].grad = grad
        for module_id, names in self._module_optimizers.items():
            for name in names:
                self.get_optimizer(module_id, name).step()

    def _compute_off_policyness(self, batch: dict) -> None:
        """RLlib's off-policyness metric, logged once per update instead of per minibatch.

        It is the weights sequence number minus the sampler's, the same for every minibatch
        of one update, and logged with ``window=1``: recomputing it per minibatch only costs
        time (about 4% of a PPO update for the paper's 64-64 networks on CPU).
        """
        if not self._off_policyness_logged:
            self._off_policyness_logged = True
            super()._compute_off_policyness(batch)

    def configure_optimizers_for_module(self, module_id: str, config: Any = None) -> None:
        params = self.get_parameters(self._module[module_id])
        spec = self.config.learner_config_dict.get(OPTIMIZER_KEY)
        self.register_optimizer(module_id=module_id, optimizer=make_optimizer(params, spec),
                                params=params, lr_or_lr_schedule=config.lr)

    # ---- round bookkeeping
    def before_gradient_based_update(self, *, timesteps: dict[str, Any]) -> None:
        super().before_gradient_based_update(timesteps=timesteps)
        self._iif_iteration += 1
        self._off_policyness_logged = False
        self._env_steps = int(timesteps.get(NUM_ENV_STEPS_SAMPLED_LIFETIME, 0) or 0)
        self._modules_this_round = []

    def mark_update_start(self) -> None:
        self._update_t0 = time.perf_counter()

    def after_gradient_based_update(self, *, timesteps: dict[str, Any]) -> None:
        super().after_gradient_based_update(timesteps=timesteps)
        if self._update_t0 is not None:
            seconds = time.perf_counter() - self._update_t0
            for mid in self._modules_this_round:
                self.metrics.log_value((mid, "iif", "update_s"), seconds, window=1)
            self._update_t0 = None

    @property
    def iif_iteration(self) -> int:
        return self._iif_iteration

    # ---- scoring
    @staticmethod
    def _dist_rank() -> int:
        dist = torch.distributed
        return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0

    def functional_policy(self, module_id: str) -> FunctionalPolicy:
        if module_id not in self._policies:
            self._policies[module_id] = functional_policy(self.module[module_id])
        return self._policies[module_id]

    @property
    def scorer(self) -> Scorer:
        if self._scorer is None:
            self._scorer = self._make_scorer()
        return self._scorer

    def placement(self) -> dict[str, Any]:
        """Node and device of this learner and of its scorer actors (none when local)."""
        import ray

        scorers = getattr(self._scorer, "actor_info", None) or []
        return {"node_id": ray.get_runtime_context().get_node_id(), "device": str(self._device),
                "scorers": [dict(info) for info in scorers]}

    def _make_scorer(self) -> Scorer:
        if self.iif.num_scorers == 0:
            return LocalScorer(self.iif.scoring_method, self.iif.chunk_size)
        from iif_ray.scorer_pool import AttributionPool

        return AttributionPool.for_learner(self)

    def _all_reduce_direction(self, direction: dict[str, torch.Tensor], n: int) -> dict:
        """With several learners, average the target gradient weighted by shard size.

        Every learner must score against the same direction, or scores from different shards
        would not be comparable.
        """
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return direction
        keys = list(direction)
        flat = torch.cat([direction[k].flatten() * n for k in keys]
                         + [torch.tensor([float(n)], device=direction[keys[0]].device)])
        dist.all_reduce(flat)
        flat = flat[:-1] / flat[-1].clamp_min(1.0)
        out, offset = {}, 0
        for k in keys:
            size = direction[k].numel()
            out[k] = flat[offset:offset + size].view_as(direction[k])
            offset += size
        return out

    def filter_module_batch(self, module_id: str, cols: dict, episodes: list) -> dict:
        """Score, select and drop rows of one module's train batch; log and write the ledger."""
        t_start = time.perf_counter()
        settings = self.iif
        it = self._iif_iteration
        self._modules_this_round.append(module_id)
        real_idx = np.flatnonzero(_numpy(cols[Columns.LOSS_MASK]).astype(bool))
        n = len(real_idx)
        real = _index_columns(
            {k: cols[k] for k in (Columns.OBS, Columns.ACTIONS, Columns.ACTION_LOGP,
                                   Columns.ADVANTAGES, ADVANTAGES_RAW)},
            real_idx,
        )
        adv_std = _numpy(real[Columns.ADVANTAGES])
        metrics: dict[str, float] = {"num_records": float(n)}
        scores = self._score(module_id, real, adv_std, metrics) if settings.scores and n else None

        forced, self.forced_keep = self.forced_keep, None
        if forced is not None:  # a one-round override (targeted intervention)
            if len(forced) != n:
                raise ValueError(f"forced keep mask has {len(forced)} entries for {n} records")
            keep = np.asarray(forced, dtype=bool)
        elif settings.filters and scores is not None:
            sel = select(scores, settings.selection, settings.drop_fraction,
                         advantages=adv_std, rng=self._select_rng, iteration=it,
                         min_keep=settings.min_keep)
            keep = sel.keep
            metrics["clamped"] = float(sel.clamped)
        else:
            keep = np.ones(n, dtype=bool)
        kept_idx = real_idx[keep]
        if settings.shuffle_first_epoch:
            kept_idx = kept_idx[self._shuffle_rng.permutation(len(kept_idx))]
        metrics["num_dropped"] = float(n - len(kept_idx))
        metrics["frac_dropped"] = float(n - len(kept_idx)) / max(n, 1)

        if self._ledger is not None:
            if scores is None:
                scores = np.full(n, np.nan, dtype=np.float32)
            self._write_ledger(it, cols, real_idx, episodes, scores, keep)
        out = _index_columns(cols, kept_idx)
        # Every kept row is real, so the loss mask is all ones: without it RLlib's PPO loss
        # takes plain means instead of boolean-indexed ones (same values, a faster update).
        out.pop(Columns.LOSS_MASK, None)
        metrics["filter_s"] = time.perf_counter() - t_start
        self.metrics.log_dict(metrics, key=(module_id, "iif"), window=1)
        return out

    def _score(self, module_id: str, real: dict, adv_std: np.ndarray,
               metrics: dict[str, float]) -> np.ndarray | None:
        """Scores of the real records, or None when scoring failed and the user chose to
        train unfiltered (``scoring_fallback="train-unfiltered"``, logged every time)."""
        if not torch.is_tensor(real[Columns.OBS]):
            raise ValueError("influence scoring needs tensor observations; wrap dict "
                             "observation spaces (see iif_ray.envs)")
        t0 = time.perf_counter()
        n = len(adv_std)
        policy = self.functional_policy(module_id)
        target_batch = {
            "obs": real[Columns.OBS],
            "actions": real[Columns.ACTIONS],
            "logp_old": real[Columns.ACTION_LOGP],
            "advantages": real[Columns.ADVANTAGES],
            "advantages_raw": real[ADVANTAGES_RAW],
        }
        value, local_direction = target_gradient(policy, self._target, target_batch)
        self.last_target_batch = target_batch
        direction = self._all_reduce_direction(local_direction, n)
        self.last_direction = {"local": local_direction, "global": direction, "n": n}
        records = RecordBatch(real[Columns.OBS], real[Columns.ACTIONS],
                              real[Columns.ACTION_LOGP], real[Columns.ADVANTAGES])
        ent = float(self.entropy_coeff_schedulers_per_module[module_id].get_current_value())
        try:
            result = self.scorer.score(policy, records, direction, entropy_coeff=ent,
                                       module_id=module_id)
        except ScoringFailedError as e:
            if self.iif.scoring_fallback == "raise":
                raise ScoringFailedError(f"iteration {self._iif_iteration}: {e}") from e
            logger.warning("iteration %d: scoring failed (%s); this round trains UNFILTERED "
                           "because scoring_fallback='train-unfiltered'", self._iif_iteration, e)
            metrics["scoring_failed"] = 1.0
            return None
        scores = result.scores
        self.last_scores = scores
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
        return scores

    def _write_ledger(self, it: int, cols: dict, real_idx: np.ndarray, episodes: list,
                      scores: np.ndarray, keep: np.ndarray) -> None:
        num_rows = len(cols[Columns.LOSS_MASK])
        ep_ids, ts = _provenance(episodes, num_rows)
        n = len(real_idx)

        def real(name: str) -> np.ndarray:
            return _numpy(cols[name])[real_idx]

        columns = {
            "iteration": np.full(n, it, dtype=np.int64),
            "env_steps": np.full(n, self._env_steps, dtype=np.int64),
            "learner": np.full(n, self._rank, dtype=np.int16),
            "episode_id": ep_ids[real_idx].astype(str),
            "t": ts[real_idx],
            "action": real(Columns.ACTIONS),
            "reward": real(Columns.REWARDS).astype(np.float32),
            "advantage": real(ADVANTAGES_RAW).astype(np.float32),
            "advantage_std": real(Columns.ADVANTAGES).astype(np.float32),
            "value_target": real(Columns.VALUE_TARGETS).astype(np.float32),
            "logp": real(Columns.ACTION_LOGP).astype(np.float32),
            "score": scores.astype(np.float32),
            "kept": keep.astype(bool),
        }
        obs = real(Columns.OBS) if self.iif.ledger_obs else None
        self._ledger.write(it, self._rank, columns, obs=obs)

    def target_value(self, module_id: str = "default_policy") -> float:
        """The target at the current parameters, on the latest scored round's batch.

        A targeted intervention reads it after each retrained update, to measure what the
        removal did to the target (e.g. the probe action's log-probability).
        """
        if self.last_target_batch is None:
            raise ValueError("no round has been scored yet")
        policy = self.functional_policy(module_id)
        with torch.no_grad():
            return float(self._target(policy.bind(policy.params()), self.last_target_batch))

    # ---- state
    def get_state(self, components=None, *, not_components=None, **kwargs) -> dict:
        state = super().get_state(components, not_components=not_components, **kwargs)
        state[STATE_KEY] = {
            "iteration": self._iif_iteration,
            "select_rng": self._select_rng.bit_generator.state,
            "shuffle_rng": self._shuffle_rng.bit_generator.state,
        }
        return state

    def set_state(self, state: dict) -> None:
        own = state.get(STATE_KEY)
        super().set_state({k: v for k, v in state.items() if k != STATE_KEY})
        if own:
            self._iif_iteration = int(own["iteration"])
            self._select_rng.bit_generator.state = own["select_rng"]
            self._shuffle_rng.bit_generator.state = own["shuffle_rng"]

    def shutdown_scorer(self) -> None:
        if self._scorer is not None:
            self._scorer.shutdown()
            self._scorer = None
