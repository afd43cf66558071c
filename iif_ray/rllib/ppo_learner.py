"""The paper's PPO on RLlib: its optimiser, its advantage scope, and a lean update loop.

RLlib's ``PPOTorchLearner`` computes the loss; this subclass changes only what the paper's
PPO (Stable-Baselines3) does differently, plus shortcuts that give RLlib's results faster.
The influence round lives one level up, in
:class:`~iif_ray.rllib.iif_learner.IIFPPOTorchLearner`.

**The lean update loop** (``IIFConfig.training(fast_update=True)``, the default). RLlib's
``Learner.update`` spends about as long around each minibatch step as in it, for the paper's
64-64 networks on CPU: its ``MiniBatchCyclicIterator`` slices ``SampleBatch`` objects,
concatenates them and wraps a new ``MultiAgentBatch`` per minibatch; per minibatch it logs
eight step counters, two Prometheus metrics and a timer, and PPO's loss logs six terms and
computes the explained variance. :meth:`PaperPPOTorchLearner.update` runs the same steps
(RLlib's own ``_update``: forward, loss, backward, gradient postprocessing, optimiser step)
on minibatches gathered by index from the batch's tensors, in RLlib's exact row order
(:mod:`iif_ray.rllib.minibatches`), and logs once per round:

* the loss terms and explained variance of the round's last minibatch, the value RLlib's
  ``window=1`` statistics report anyway (``minibatch_metrics=True`` logs every minibatch);
* the step counters with the round's totals, which RLlib's sum and mean reductions turn into
  the same figures.

Within the loop, each minibatch gathers only the columns the PPO module and loss read, and
for the setup every preset uses (one default PPO module, one optimiser, no gradient clipping,
one learner) :meth:`PaperPPOTorchLearner._direct_step` inlines RLlib's
``_uncompiled_update``: the module's train forward, the loss with the categorical log-prob
and entropy computed by torch's own operations (:class:`LeanCategorical`), backward and the
guarded step, without the MultiRLModule and per-module dispatch around each call; from the
round's second minibatch on, the gradients live in one flat tensor
(:class:`GradientBuffer`), zeroed and checked for nan/inf as one.

Same keys, same values, same weights: ``tests/rllib/test_fast_update.py`` checks it against
RLlib's stock update (bit-identical on one machine). Not covered, so RLlib's stock update
runs instead (with a one-line log message): recurrent (stateful) modules, updates from Ray
Data iterators, and ``minibatch_size=None``. Dict/Tuple observations and continuous actions
take the lean loop (columns are gathered structurally; the loss uses the module's own
distribution classes).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch
import tree
from ray.rllib.algorithms.ppo.ppo import (
    LEARNER_RESULTS_KL_KEY,
    LEARNER_RESULTS_VF_EXPLAINED_VAR_KEY,
    LEARNER_RESULTS_VF_LOSS_UNCLIPPED_KEY,
)
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.core.columns import Columns
from ray.rllib.core.distribution.torch.torch_distribution import TorchCategorical
from ray.rllib.core.learner.learner import ENTROPY_KEY, POLICY_LOSS_KEY, VF_LOSS_KEY
from ray.rllib.core.learner.training_data import TrainingData
from ray.rllib.core.rl_module.apis import SelfSupervisedLossAPI
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
from ray.rllib.utils.annotations import override
from ray.rllib.utils.metrics import (
    ALL_MODULES,
    MODULE_TRAIN_BATCH_SIZE_MEAN,
    NUM_ENV_STEPS_TRAINED,
    NUM_ENV_STEPS_TRAINED_LIFETIME,
    NUM_MODULE_STEPS_TRAINED,
    NUM_MODULE_STEPS_TRAINED_LIFETIME,
    WEIGHTS_SEQ_NO,
)
from ray.rllib.utils.torch_utils import explained_variance

from iif_ray.rllib.connectors.standardised_gae import ADVANTAGES_RAW
from iif_ray.rllib.minibatches import CyclicMinibatches
from iif_ray.rllib.module import IIFPPOTorchRLModule
from iif_ray.rllib.settings import (
    OPTIMIZERS,
    advantage_normalization,
    optimizer_spec,
    update_options,
)

logger = logging.getLogger(__name__)

# What RLlib's default PPO module's train forward and PPO loss (ours too) read of a minibatch.
PPO_LOSS_COLUMNS = (Columns.OBS, Columns.ACTIONS, Columns.ACTION_LOGP, Columns.ADVANTAGES,
                    ADVANTAGES_RAW, Columns.VALUE_TARGETS, Columns.LOSS_MASK)


def make_optimizer(params: list, spec: dict[str, Any] | None) -> torch.optim.Optimizer:
    """Build the optimiser a ``{"type": "adam"|"sgd", **kwargs}`` spec names.

    The learning rate comes from RLlib's scheduler, which overwrites it before each step.

    Raises:
        ValueError: an optimizer type other than ``adam`` or ``sgd``.
    """
    spec = dict(spec or {"type": "adam"})
    kind = spec.pop("type", "adam")
    # torch's multi-tensor step: one call per step over every parameter instead of a loop
    # of small kernels (its default on GPUs only). The same floats: the same kernels per
    # tensor (``tests/rllib/test_ppo_learner.py``); Adam's step on the paper's 64-64
    # networks on CPU takes about three quarters of the time.
    spec.setdefault("foreach", True)
    if kind == "adam":
        return torch.optim.Adam(params, **spec)
    if kind == "sgd":
        return torch.optim.SGD(params, lr=1e-3, **spec)
    raise ValueError(f"optimizer type must be one of {list(OPTIMIZERS)}, got {kind!r}")


class PaperPPOTorchLearner(PPOTorchLearner):
    """RLlib's PPO learner with the paper's optimiser choice, advantage scope and a lean
    update loop."""

    # Set by the lean loop around each minibatch step: None outside it (RLlib's stock loss
    # runs), else whether this minibatch logs its loss terms.
    _log_loss_terms: bool | None = None

    # ---- the lean update loop
    @override(PPOTorchLearner)
    def update(self, batch=None, batches=None, batch_refs=None, episodes=None,
               episodes_refs=None, data_iterators=None, training_data=None, *,
               timesteps: dict[str, Any] | None = None, num_total_minibatches: int = 0,
               num_epochs: int = 1, minibatch_size: int | None = None,
               shuffle_batch_per_epoch: bool = False, _no_metrics_reduce: bool = False,
               **kwargs: Any) -> Any:
        """RLlib's ``Learner.update`` (same arguments, same result), minibatches by index.

        Falls back to RLlib's own loop where :meth:`lean_update_unsupported` names a reason.
        """
        if training_data is None:
            training_data = TrainingData(batch=batch, batches=batches, batch_refs=batch_refs,
                                         episodes=episodes, episodes_refs=episodes_refs,
                                         data_iterators=data_iterators)
        reason = self.lean_update_unsupported(training_data, minibatch_size)
        if reason is not None:
            if reason and not getattr(self, "_fallback_noted", False):
                self._fallback_noted = True
                logger.info("PPO update: RLlib's stock minibatch loop (%s)", reason)
            return super().update(training_data=training_data, timesteps=timesteps,
                                  num_total_minibatches=num_total_minibatches,
                                  num_epochs=num_epochs, minibatch_size=minibatch_size,
                                  shuffle_batch_per_epoch=shuffle_batch_per_epoch,
                                  _no_metrics_reduce=_no_metrics_reduce, **kwargs)
        self._check_is_built()
        self.before_gradient_based_update(timesteps=timesteps or {})
        training_data.validate()
        training_data.solve_refs()
        self._weights_seq_no += 1
        columns, env_steps = self._train_columns(training_data)
        loss_per_module: dict[str, Any] = {}
        if columns:
            loss_per_module = self._minibatch_loop(
                columns, env_steps, minibatch_size=int(minibatch_size), num_epochs=num_epochs,
                shuffle=shuffle_batch_per_epoch and num_epochs > 1,
                num_total_minibatches=num_total_minibatches)
        for mid, loss in loss_per_module.items():
            self.metrics.log_value(key=(mid, self.TOTAL_LOSS_KEY), value=loss, window=1)
        self.after_gradient_based_update(timesteps=timesteps or {})
        if not _no_metrics_reduce:
            return self.metrics.reduce()
        return None

    def lean_update_unsupported(self, training_data: TrainingData,
                                minibatch_size: int | None) -> str | None:
        """Why RLlib's stock loop must run this update ("" when switched off), else None."""
        if not update_options(self.config.learner_config_dict)["fast"]:
            return ""
        if training_data.data_iterators:
            return "updates from Ray Data iterators"
        if not minibatch_size:
            return "minibatch_size=None"
        stateful = [mid for mid, m in self.module.items() if m.is_stateful()]
        if stateful:
            return f"recurrent module(s) {stateful}"
        return None

    def _train_columns(self, training_data: TrainingData) -> tuple[dict[str, dict], int]:
        """``({module_id: {column: tensor}}, env steps)`` of the round's train batch, for the
        modules to be updated (RLlib's learner connector pipeline builds it from episodes)."""
        if training_data.episodes is not None:
            if self._learner_connector is None:
                raise ValueError(f"Learner ({self}) got episodes but has no learner "
                                 "connector pipeline to batch them")
            out = self._learner_connector(
                rl_module=self.module,
                batch=training_data.batch if training_data.batch is not None else {},
                episodes=training_data.episodes, shared_data={}, metrics=self.metrics)
            columns = {mid: dict(cols) for mid, cols in out.items()}
            env_steps = sum(len(e) for e in training_data.episodes)
        else:
            made = self._make_batch_if_necessary(training_data=training_data)
            columns = {mid: dict(b) for mid, b in made.policy_batches.items()}
            env_steps = made.env_steps()
        unknown = set(columns) - set(self.module.keys())
        if unknown:
            raise ValueError(f"Batch contains one or more ModuleIDs ({unknown}) that are not "
                             "in this Learner!")
        if callable(self.config.policies_to_train):  # it may want to see the batch
            whole = MultiAgentBatch({m: SampleBatch(c) for m, c in columns.items()}, env_steps)
            keep = [m for m in columns if self.should_module_be_updated(m, whole)]
        else:
            keep = [m for m in columns if self.should_module_be_updated(m)]
        return {m: columns[m] for m in keep}, env_steps

    def _minibatch_loop(self, columns: dict[str, dict], env_steps: int, *, minibatch_size: int,
                        num_epochs: int, shuffle: bool, num_total_minibatches: int) -> dict:
        """Every minibatch step of the round; returns the last step's loss per module."""
        num_rows = {mid: _num_rows(cols) for mid, cols in columns.items()}
        plan = CyclicMinibatches(num_rows, minibatch_size=minibatch_size, num_epochs=num_epochs,
                                 shuffle=shuffle, num_total_minibatches=num_total_minibatches)
        every = update_options(self.config.learner_config_dict)["minibatch_metrics"]
        steps = list(plan)
        direct = self.direct_step_unsupported(list(columns)) is None
        read = {mid: self.columns_read(mid, cols) for mid, cols in columns.items()}
        loss_per_module: dict[str, Any] = {}
        grads: GradientBuffer | None = None
        try:
            for i, rows in enumerate(steps):
                self._log_loss_terms = every or i == len(steps) - 1
                # The first minibatch carries every column: RLlib's off-policyness metric,
                # logged once per round, reads its weights sequence numbers.
                minibatch = {mid: _gather(columns[mid] if i == 0 else read[mid], idx)
                             for mid, idx in rows.items()}
                if direct:
                    loss_per_module, grads = self._direct_step(minibatch, grads)
                else:
                    _, loss_per_module, _ = self._update(minibatch)
        finally:
            self._log_loss_terms = None
        self._log_steps_trained_once(num_minibatches=len(steps), minibatch_size=minibatch_size,
                                     module_ids=list(columns), env_steps=env_steps)
        return loss_per_module

    def columns_read(self, module_id: str, cols: dict) -> dict:
        """The columns of ``cols`` a minibatch step reads: all of them, except for RLlib's
        default PPO module (ours, not a subclass), whose train forward reads only the
        observations and whose loss reads the PPO columns. Gathering the rest (value
        predictions, sampler logits without a KL term, sequence numbers, ...) per
        minibatch is a third of the row gathering for the paper's networks."""
        module = self.module[module_id]
        if type(module) is not IIFPPOTorchRLModule or module.is_stateful():
            return cols
        keep = set(PPO_LOSS_COLUMNS)
        if self.config.get_config_for_module(module_id).use_kl_loss:
            keep.add(Columns.ACTION_DIST_INPUTS)
        return {k: v for k, v in cols.items() if k in keep}

    def direct_step_unsupported(self, module_ids: list[str]) -> str | None:
        """Why a minibatch step must go through RLlib's ``_update``, else None.

        :meth:`_direct_step` inlines RLlib's step for the setup every preset uses: one
        module, RLlib's default PPO module without mode toggles, one optimiser, no gradient
        clipping, scaling or lr scheduler classes, one learner (no DDP wrapper to sync
        through), RLlib's own loss (no self-supervised loss API) and no gradient logging.
        """
        if len(module_ids) != 1:
            return f"{len(module_ids)} modules"
        module = self.module[module_ids[0]]
        if not (isinstance(module, IIFPPOTorchRLModule) and module._mode_free):
            return f"module {type(module).__name__}"
        if isinstance(module, SelfSupervisedLossAPI):
            return "self-supervised loss"
        if len(self._module_optimizers.get(module_ids[0], ())) != 1:
            return "several optimisers"
        if (self.config.grad_clip is not None or self._grad_scalers is not None
                or self._lr_scheduler_classes is not None):
            return "gradient clipping, scaling or lr schedulers"
        if self.config.log_gradients:  # RLlib logs the global norm in postprocessing
            return "gradient logging"
        if self.config.num_learners > 1:
            return "several learners"
        return None

    def _direct_step(self, minibatch: dict[str, dict], grads: GradientBuffer | None = None,
                     ) -> tuple[dict[str, torch.Tensor], GradientBuffer | None]:
        """One minibatch step of RLlib's ``TorchLearner._uncompiled_update``, its calls
        inlined for one module (see :meth:`direct_step_unsupported`).

        The same operations in the same order (off-policyness, the module's train forward,
        the loss, zeroed gradients, backward, the guarded optimiser step), without the
        MultiRLModule and per-module dispatch around each: about a quarter of a minibatch
        step for the paper's 64-64 networks on CPU. With ``grads`` (the previous step's
        :class:`GradientBuffer`) the gradients are zeroed and checked as one tensor.
        Returns ``{module_id: loss}`` and the buffer for the next step.
        """
        (module_id, batch), = minibatch.items()
        self._compute_off_policyness(minibatch)
        module = self.module[module_id]
        fwd_out = module._forward_train(batch)
        loss = self.compute_loss_for_module(
            module_id=module_id, config=self.config.get_config_for_module(module_id),
            batch=batch, fwd_out=fwd_out)
        if grads is not None:
            grads.zero()
            loss.backward()
            if grads.finite():  # what RLlib's guard and ours let through: step
                self._step_optimizers()
                return {module_id: loss}, grads
            # RLlib's nan/inf handling replaces the gradient tensors: no buffer after it.
            self.apply_gradients({pid: p.grad for pid, p in self._params.items()})
            return {module_id: loss}, None
        for optim in self._optimizer_parameters:
            optim.zero_grad(set_to_none=True)
        if loss.grad_fn is None:  # every parameter frozen: RLlib's step does nothing
            return {module_id: loss}, None
        loss.backward()
        self.apply_gradients({pid: p.grad for pid, p in self._params.items()})
        return {module_id: loss}, GradientBuffer.attach(list(self._params.values()))

    def _log_steps_trained_once(self, *, num_minibatches: int, minibatch_size: int,
                                module_ids: list[str], env_steps: int) -> None:
        """RLlib's per-minibatch step counters, logged once with the round's totals.

        RLlib logs, per minibatch and module, the minibatch size (mean-reduced) and as module
        steps (sum-reduced), and the *whole batch's* env steps (its minibatch
        ``MultiAgentBatch`` inherits the batch's count); one log of each total reduces to
        the same figures.
        """
        if num_minibatches == 0:
            return
        module_steps = num_minibatches * minibatch_size
        for mid in module_ids:
            self.metrics.log_value((mid, WEIGHTS_SEQ_NO), self._weights_seq_no, window=1)
            self.metrics.log_value((mid, MODULE_TRAIN_BATCH_SIZE_MEAN), minibatch_size,
                                   reduce="mean")
            self.metrics.log_value((mid, NUM_MODULE_STEPS_TRAINED), module_steps, reduce="sum")
            self.metrics.log_value((mid, NUM_MODULE_STEPS_TRAINED_LIFETIME), module_steps,
                                   reduce="lifetime_sum", with_throughput=True)
            self.metrics.log_value((ALL_MODULES, NUM_MODULE_STEPS_TRAINED), module_steps,
                                   reduce="sum", with_throughput=True)
            self.metrics.log_value((ALL_MODULES, NUM_MODULE_STEPS_TRAINED_LIFETIME),
                                   module_steps, reduce="lifetime_sum", with_throughput=True)
        self.metrics.log_value((ALL_MODULES, NUM_ENV_STEPS_TRAINED),
                               num_minibatches * env_steps, reduce="sum", with_throughput=True)
        self.metrics.log_value((ALL_MODULES, NUM_ENV_STEPS_TRAINED_LIFETIME),
                               num_minibatches * env_steps, reduce="lifetime_sum",
                               with_throughput=True)
        if env_steps > 0:  # RLlib's Prometheus counters, once per round
            self._metrics_all_modules_num_env_steps_trained.inc(
                value=num_minibatches * env_steps)
            self._metrics_all_modules_num_module_steps_trained.inc(
                value=module_steps * len(module_ids))

    # ---- the loss
    @override(PPOTorchLearner)
    def compute_loss_for_module(self, *, module_id: str, config: Any, batch: dict,
                                fwd_out: dict) -> torch.Tensor:
        """PPO's loss; with ``advantage_normalization="minibatch"`` the raw GAE advantages are
        standardised within each minibatch first, as Stable-Baselines3 (and the paper) do.

        Scoring always uses the buffer-standardised advantages: minibatches are drawn after
        the filter, so their composition is not known when records are scored.
        """
        if advantage_normalization(self.config.learner_config_dict) == "minibatch":
            raw = batch[ADVANTAGES_RAW]
            mask = batch.get(Columns.LOSS_MASK)
            real = raw[mask.bool()] if mask is not None else raw
            std = real.std() if real.numel() > 1 else raw.new_tensor(1.0)
            batch = dict(batch)
            batch[Columns.ADVANTAGES] = (raw - real.mean()) / (std + 1e-8)
        if self._log_loss_terms is None:
            return super().compute_loss_for_module(module_id=module_id, config=config,
                                                   batch=batch, fwd_out=fwd_out)
        return self.ppo_loss(module_id=module_id, config=config, batch=batch, fwd_out=fwd_out,
                             log=self._log_loss_terms)

    def ppo_loss(self, *, module_id: str, config: Any, batch: dict, fwd_out: dict,
                 log: bool) -> torch.Tensor:
        """RLlib's PPO loss, term for term and in its operation order (so the same floats),
        with its logging and explained variance only when ``log``.

        The clipped surrogate, the squared value error clipped at ``vf_clip_param``, the
        entropy bonus, all averaged over ``loss_mask`` rows when the batch has that column,
        plus the KL penalty when ``use_kl_loss``. Two terms that change nothing are left out
        of the graph: the entropy bonus at coefficient 0 and the value clip at ``inf`` (the
        presets' settings, as SB3's); same loss, same gradients, five fewer small tensor
        operations per minibatch forward and as many backward.
        """
        module = self.module[module_id].unwrapped()
        mask = batch.get(Columns.LOSS_MASK)
        if mask is not None:
            num_valid = torch.sum(mask)

            def mean(x: torch.Tensor) -> torch.Tensor:
                return torch.sum(x[mask]) / num_valid
        else:
            mean = torch.mean
        dist_cls = module.get_train_action_dist_cls()
        logits = fwd_out[Columns.ACTION_DIST_INPUTS]
        if dist_cls is TorchCategorical and not config.use_kl_loss:
            dist = LeanCategorical(logits)
        else:
            dist = dist_cls.from_logits(logits)
        ratio = torch.exp(dist.logp(batch[Columns.ACTIONS]) - batch[Columns.ACTION_LOGP])
        if config.use_kl_loss:
            sampler_dist = module.get_exploration_action_dist_cls().from_logits(
                batch[Columns.ACTION_DIST_INPUTS])
            mean_kl = mean(sampler_dist.kl(dist))
        else:
            mean_kl = None  # RLlib logs a zero
        entropy_coeff = self.entropy_coeff_schedulers_per_module[module_id].get_current_value()
        # With a zero coefficient the entropy term adds exactly 0 to the loss and zeros to
        # the gradients: it is left out of the graph (computed, without one, for the log).
        entropy = dist.entropy() if entropy_coeff != 0 else None
        adv = batch[Columns.ADVANTAGES]
        surrogate = torch.min(adv * ratio,
                              adv * torch.clamp(ratio, 1 - config.clip_param,
                                                1 + config.clip_param))
        if config.use_critic:
            values = module.compute_values(batch, embeddings=fwd_out.get(Columns.EMBEDDINGS))
            vf_loss = torch.pow(values - batch[Columns.VALUE_TARGETS], 2.0)
            # Clamping a square to [0, inf] changes neither it nor its gradient.
            vf_clipped = (vf_loss if config.vf_clip_param == math.inf
                          else torch.clamp(vf_loss, 0, config.vf_clip_param))
        else:
            values = vf_loss = vf_clipped = torch.tensor(0.0, device=surrogate.device)
        per_row = -surrogate + config.vf_loss_coeff * vf_clipped
        total = mean(per_row - entropy_coeff * entropy if entropy is not None else per_row)
        if config.use_kl_loss:
            total += self.curr_kl_coeffs_per_module[module_id] * mean_kl
        if log:
            if entropy is None:
                with torch.no_grad():
                    entropy = dist.entropy()
            self.metrics.log_dict({
                POLICY_LOSS_KEY: -mean(surrogate),
                VF_LOSS_KEY: mean(vf_clipped) if config.use_critic else vf_clipped,
                LEARNER_RESULTS_VF_LOSS_UNCLIPPED_KEY: (
                    mean(vf_loss) if config.use_critic else vf_loss),
                LEARNER_RESULTS_VF_EXPLAINED_VAR_KEY: explained_variance(
                    batch[Columns.VALUE_TARGETS], values),
                ENTROPY_KEY: mean(entropy),
                LEARNER_RESULTS_KL_KEY: (mean_kl if mean_kl is not None
                                         else torch.tensor(0.0, device=ratio.device)),
            }, key=module_id, window=1)
        return total

    @override(PPOTorchLearner)
    def configure_optimizers_for_module(self, module_id: str, config: Any = None) -> None:
        params = self.get_parameters(self._module[module_id])
        spec = optimizer_spec(self.config.learner_config_dict)
        self.register_optimizer(module_id=module_id, optimizer=make_optimizer(params, spec),
                                params=params, lr_or_lr_schedule=config.lr)

    @override(PPOTorchLearner)
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
        self._step_optimizers()

    def _step_optimizers(self) -> None:
        """Every optimiser's step on the gradients in place: RLlib's step once its guard
        has passed (no scalers or lr schedulers to drive)."""
        for module_id, names in self._module_optimizers.items():
            for name in names:
                self.get_optimizer(module_id, name).step()

    @override(PPOTorchLearner)
    def before_gradient_based_update(self, *, timesteps: dict[str, Any]) -> None:
        super().before_gradient_based_update(timesteps=timesteps)
        self._off_policyness_logged = False

    @override(PPOTorchLearner)
    def _compute_off_policyness(self, batch: dict) -> None:
        """RLlib's off-policyness metric, logged once per update instead of per minibatch.

        It is the weights sequence number minus the sampler's, the same for every minibatch
        of one update, and logged with ``window=1``: recomputing it per minibatch only costs
        time (about 4% of a PPO update for the paper's 64-64 networks on CPU).
        """
        if not getattr(self, "_off_policyness_logged", False):
            self._off_policyness_logged = True
            super()._compute_off_policyness(batch)


class GradientBuffer:
    """The trained parameters' gradients as views into one flat tensor.

    RLlib zeroes gradients by setting them to None (``zero_grad(set_to_none=True)``, a
    Python loop over every parameter of every optimiser, per minibatch) and guards the
    step with a finiteness check per gradient tensor; for the paper's 64-64 networks on
    CPU the two take about a tenth of a PPO update. With every gradient a view into one
    tensor, zeroing is one ``zero_()`` and the guard one ``isfinite().all()``; backward
    accumulates into the views (``0 + g``: the same values; a ``-0.0`` entry comes out
    ``+0.0``, equal as a number). Only built where it changes nothing:
    every parameter that requires a gradient got one in the round's first step (so none
    that RLlib would leave at None gets a zero instead; the loss's graph is the same for
    every minibatch of a round, its coefficients being fixed within one), all of one dtype
    and device.
    """

    __slots__ = ("flat",)

    def __init__(self, flat: torch.Tensor) -> None:
        self.flat = flat

    @classmethod
    def attach(cls, params: list[torch.Tensor]) -> GradientBuffer | None:
        """Move the current gradients of ``params`` into one buffer, or None where it
        would change what a step does."""
        trained = [p for p in params if p.requires_grad]
        if not trained or any(p.grad is None or p.grad.is_sparse or p.grad.dtype != p.dtype
                              or p.dtype != trained[0].dtype or p.device != trained[0].device
                              for p in trained):
            return None
        flat = torch.empty(sum(p.numel() for p in trained), dtype=trained[0].dtype,
                           device=trained[0].device)
        start = 0
        for p in trained:
            view = flat[start:start + p.numel()].view_as(p)
            view.copy_(p.grad)  # the step's gradients stay readable, as RLlib leaves them
            p.grad = view
            start += p.numel()
        return cls(flat)

    def zero(self) -> None:
        self.flat.zero_()

    def finite(self) -> bool:
        return bool(self.flat.isfinite().all())


class LeanCategorical:
    """RLlib's ``TorchCategorical`` from logits, as the loss uses it: ``logp`` and
    ``entropy`` with torch's ``Categorical`` operations in torch's order (normalise by
    logsumexp, gather; clamp, softmax, product, sum), hence the same floats and gradients,
    without the two wrapper objects built per minibatch."""

    __slots__ = ("logits",)

    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits - logits.logsumexp(dim=-1, keepdim=True)

    def logp(self, actions: torch.Tensor) -> torch.Tensor:
        index = actions.long().unsqueeze(-1)
        index, log_pmf = torch.broadcast_tensors(index, self.logits)
        return log_pmf.gather(-1, index[..., :1]).squeeze(-1)

    def entropy(self) -> torch.Tensor:
        logits = torch.clamp(self.logits, min=torch.finfo(self.logits.dtype).min)
        return -(logits * torch.softmax(self.logits, dim=-1)).sum(-1)


def _num_rows(cols: dict) -> int:
    return len(next(iter(tree.flatten(cols))))


def _gather(cols: dict, index: np.ndarray) -> dict:
    """Rows ``index`` of every column (tensors on any device, arrays, nested dicts)."""
    on_device: dict[Any, torch.Tensor] = {}

    def take(x: Any) -> Any:
        if torch.is_tensor(x):
            idx = on_device.get(x.device)
            if idx is None:
                idx = on_device[x.device] = torch.from_numpy(index).to(x.device)
            return x[idx]
        if isinstance(x, np.ndarray):
            return x[index]
        return [x[i] for i in index]  # e.g. infos: a list per row

    if all(torch.is_tensor(v) for v in cols.values()):
        return {k: take(v) for k, v in cols.items()}
    return {k: tree.map_structure(take, v) if isinstance(v, (dict, tuple)) else take(v)
            for k, v in cols.items()}
