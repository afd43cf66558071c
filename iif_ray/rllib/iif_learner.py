"""The IIF PPO learner: score every record at theta_k, drop the harmful ones, then run PPO.

The learner owns the pipeline and the state (RNGs, scorer, ledger writer, round counter); the
round itself is :func:`~iif_ray.rllib.influence_round.influence_round`, called by the
:class:`~iif_ray.rllib.connectors.InfluenceFilter` piece appended to RLlib's learner
pipeline. The PPO loss and optimiser are the paper's
(:class:`~iif_ray.rllib.ppo_learner.PaperPPOTorchLearner`).

Plain PPO (``mode="off"``) takes exactly the same path, minus the scoring: same advantage
standardisation, same removal of phantom bootstrap rows, same first-epoch shuffle, same
optimiser. Comparisons between ``ppo`` and ``iif`` therefore differ only by the filter.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from ray.rllib.utils.annotations import override
from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME

from iif_ray.attribution import FunctionalPolicy, make_target
from iif_ray.ledger import LedgerWriter
from iif_ray.rllib.connectors import InfluenceFilter, StandardisedGAE
from iif_ray.rllib.influence_round import RoundContext, RoundResult, influence_round
from iif_ray.rllib.module_bridge import functional_policy, policy_builders
from iif_ray.rllib.ppo_learner import PaperPPOTorchLearner
from iif_ray.rllib.results import METRICS_KEY
from iif_ray.rllib.settings import read_settings
from iif_ray.scoring import LocalScorer, Scorer

STATE_KEY = "iif_learner_state"


class IIFPPOTorchLearner(PaperPPOTorchLearner):
    """PPO learner with an influence filter between GAE and the minibatch loop."""

    @override(PaperPPOTorchLearner)
    def build(self) -> None:
        super().build()
        self.iif = read_settings(self.config.learner_config_dict)
        pipeline = self._learner_connector
        if pipeline is None or not self.config.add_default_connectors_to_learner_pipeline:
            raise ValueError("IIF needs RLlib's default learner connectors "
                             "(add_default_connectors_to_learner_pipeline=True)")
        pipeline.remove("GeneralAdvantageEstimation")
        pipeline.append(StandardisedGAE(gamma=self.config.gamma, lambda_=self.config.lambda_))
        pipeline.append(InfluenceFilter(round_fn=self.run_influence_round,
                                        on_filtered=self._start_update_clock))

        self._round_index = 0
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
        self._modules_this_round: list[str] = []
        if self.iif.scores and self.iif.num_scorers > 0:
            self._scorer = self._make_scorer()  # start actors now, not inside round 1

    # ---- the round
    def run_influence_round(self, module_id: str, cols: dict, episodes: list
                            ) -> tuple[dict, dict[str, float]]:
        """Run the influence round on one module's batch; write its ledger file.

        Returns:
            ``(kept batch, round metrics)``, what the connector piece needs.
        """
        self._modules_this_round.append(module_id)
        result = influence_round(cols, episodes, self.round_context(module_id))
        self.after_round(module_id, result)
        if self._ledger is not None:
            self._ledger.write(self._round_index, self._rank, result.ledger, obs=result.obs)
        return result.batch, result.metrics

    def round_context(self, module_id: str) -> RoundContext:
        """Everything :func:`influence_round` needs from this learner for ``module_id``."""
        scores = self.iif.scores
        return RoundContext(
            settings=self.iif,
            module_id=module_id,
            round_index=self._round_index,
            env_steps=self._env_steps,
            learner_rank=self._rank,
            policy=self.functional_policy(module_id) if scores else None,
            target=self._target,
            scorer=self.scorer if scores else None,
            entropy_coeff=float(
                self.entropy_coeff_schedulers_per_module[module_id].get_current_value()),
            select_rng=self._select_rng,
            shuffle_rng=self._shuffle_rng,
            reduce_direction=self._all_reduce_direction,
            with_ledger=self._ledger is not None,
        )

    def after_round(self, module_id: str, result: RoundResult) -> None:
        """Hook for subclasses that inspect a round (the diagnostics learner does)."""

    # ---- round bookkeeping
    @override(PaperPPOTorchLearner)
    def before_gradient_based_update(self, *, timesteps: dict[str, Any]) -> None:
        super().before_gradient_based_update(timesteps=timesteps)
        self._round_index += 1
        self._env_steps = int(timesteps.get(NUM_ENV_STEPS_SAMPLED_LIFETIME, 0) or 0)
        self._modules_this_round = []

    def _start_update_clock(self) -> None:
        self._update_t0 = time.perf_counter()

    @override(PaperPPOTorchLearner)
    def after_gradient_based_update(self, *, timesteps: dict[str, Any]) -> None:
        super().after_gradient_based_update(timesteps=timesteps)
        if self._update_t0 is not None:
            seconds = time.perf_counter() - self._update_t0
            for mid in self._modules_this_round:
                self.metrics.log_value((mid, METRICS_KEY, "update_s"), seconds, window=1)
            self._update_t0 = None

    @property
    def round_index(self) -> int:
        """The round being trained (1-based), between rounds the number trained; restored
        from checkpoints."""
        return self._round_index

    # ---- scoring
    @staticmethod
    def _dist_rank() -> int:
        dist = torch.distributed
        return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0

    def functional_policy(self, module_id: str) -> FunctionalPolicy:
        """The policy network of ``module_id`` as a functional policy (cached)."""
        if module_id not in self._policies:
            self._policies[module_id] = functional_policy(self.module[module_id])
        return self._policies[module_id]

    @property
    def scorer(self) -> Scorer:
        """The in-process scorer, or this learner's pool of scorer actors (started lazily)."""
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
        s = self.iif
        if s.num_scorers == 0:
            return LocalScorer(s.scoring_method, s.chunk_size)
        from iif_ray.scoring.pool import AttributionPool

        return AttributionPool(
            policy_builders(self.module), s.num_scorers,
            num_cpus_per_scorer=s.num_cpus_per_scorer, num_gpus_per_scorer=s.num_gpus_per_scorer,
            timeout_s=s.scorer_timeout_s, max_retries=s.scorer_max_retries,
            method=s.scoring_method, chunk_size=s.chunk_size)

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

    # ---- state
    @override(PaperPPOTorchLearner)
    def get_state(self, components=None, *, not_components=None, **kwargs) -> dict:
        state = super().get_state(components, not_components=not_components, **kwargs)
        state[STATE_KEY] = {
            "round_index": self._round_index,
            "select_rng": self._select_rng.bit_generator.state,
            "shuffle_rng": self._shuffle_rng.bit_generator.state,
        }
        return state

    @override(PaperPPOTorchLearner)
    def set_state(self, state: dict) -> None:
        own = state.get(STATE_KEY)
        super().set_state({k: v for k, v in state.items() if k != STATE_KEY})
        if own:
            # Checkpoints written before the round counter was renamed call it "iteration".
            self._round_index = int(own.get("round_index", own.get("iteration", 0)))
            self._select_rng.bit_generator.state = own["select_rng"]
            self._shuffle_rng.bit_generator.state = own["shuffle_rng"]

    def shutdown_scorer(self) -> None:
        """Stop this learner's scorer actors (the algorithm calls it on cleanup)."""
        if self._scorer is not None:
            self._scorer.shutdown()
            self._scorer = None
