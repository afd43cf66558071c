"""The paper's PPO on RLlib: its optimiser, its advantage scope, and two speed patches.

RLlib's ``PPOTorchLearner`` computes the loss; this subclass changes only what the paper's
PPO (Stable-Baselines3) does differently, plus two shortcuts that give RLlib's exact results
faster. The influence round lives one level up, in
:class:`~iif_ray.rllib.iif_learner.IIFPPOTorchLearner`.
"""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.core.columns import Columns
from ray.rllib.utils.annotations import override

from iif_ray.rllib.connectors.standardised_gae import ADVANTAGES_RAW
from iif_ray.rllib.settings import OPTIMIZERS, advantage_normalization, optimizer_spec


def make_optimizer(params: list, spec: dict[str, Any] | None) -> torch.optim.Optimizer:
    """Build the optimiser a ``{"type": "adam"|"sgd", **kwargs}`` spec names.

    The learning rate comes from RLlib's scheduler, which overwrites it before each step.

    Raises:
        ValueError: an optimizer type other than ``adam`` or ``sgd``.
    """
    spec = dict(spec or {"type": "adam"})
    kind = spec.pop("type", "adam")
    if kind == "adam":
        return torch.optim.Adam(params, **spec)
    if kind == "sgd":
        return torch.optim.SGD(params, lr=1e-3, **spec)
    raise ValueError(f"optimizer type must be one of {list(OPTIMIZERS)}, got {kind!r}")


class PaperPPOTorchLearner(PPOTorchLearner):
    """RLlib's PPO learner with the paper's optimiser choice and advantage scope."""

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
        return super().compute_loss_for_module(module_id=module_id, config=config, batch=batch,
                                               fwd_out=fwd_out)

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
