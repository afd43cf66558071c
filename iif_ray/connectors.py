"""Learner connector pieces appended after RLlib's default pipeline.

* :class:`StandardisedGAE` replaces RLlib's ``GeneralAdvantageEstimation``: same GAE maths
  (RLlib's own ``compute_value_targets``), but it keeps the raw advantages (the return target
  needs them) and standardises over real rows only. RLlib's piece also counts the phantom
  bootstrap rows in the mean and std (ray-project/ray#57989).
* :class:`InfluenceFilter` runs once per training iteration on the finished batch, before the
  minibatch loop. It hands each module's batch to the learner, which scores, selects and
  returns the batch with only the kept rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis.value_function_api import ValueFunctionAPI
from ray.rllib.utils.postprocessing.value_predictions import compute_value_targets

ADVANTAGES_RAW = "iif_advantages_raw"


def episodes_of_module(piece: ConnectorV2, episodes: list, module_id: str) -> list:
    """Single-agent episodes feeding ``module_id``, in batch row order."""
    return [
        e for e in piece.single_agent_episode_iterator(episodes, agents_that_stepped_only=False)
        if e.module_id in (None, module_id)
    ]


class StandardisedGAE(ConnectorV2):
    """GAE advantages and value targets; standardised over the real (loss-mask) rows."""

    def __init__(self, input_observation_space=None, input_action_space=None, *,
                 gamma: float, lambda_: float) -> None:
        super().__init__(input_observation_space, input_action_space)
        self.gamma = gamma
        self.lambda_ = lambda_

    def __call__(self, *, rl_module: Any, episodes: list, batch: dict, **kwargs) -> dict:
        for module_id, cols in batch.items():
            module = rl_module[module_id].unwrapped()  # strip DDP with several learners
            if not isinstance(module, ValueFunctionAPI):
                continue
            if module.is_stateful():
                raise ValueError("StandardisedGAE supports non-recurrent modules only")
            with torch.no_grad():
                values = module.compute_values(cols)
            device = values.device
            values = values.float().cpu().numpy()

            def col(name: str, cols: dict = cols) -> np.ndarray:
                return cols[name].float().cpu().numpy() if torch.is_tensor(cols[name]) \
                    else np.asarray(cols[name], dtype=np.float32)

            targets = compute_value_targets(
                values=values, rewards=col(Columns.REWARDS),
                terminateds=col(Columns.TERMINATEDS), truncateds=col(Columns.TRUNCATEDS),
                gamma=self.gamma, lambda_=self.lambda_,
            )
            raw = (targets - values).astype(np.float32)
            real = cols[Columns.LOSS_MASK].cpu().numpy().astype(bool)
            mean = raw[real].mean() if real.any() else 0.0
            std = raw[real].std() if real.any() else 1.0
            standardised = (raw - mean) / max(1e-4, float(std))
            cols[Columns.ADVANTAGES] = torch.as_tensor(standardised, device=device)
            cols[Columns.VALUE_TARGETS] = torch.as_tensor(targets, device=device)
            cols[ADVANTAGES_RAW] = torch.as_tensor(raw, device=device)
        return batch


class InfluenceFilter(ConnectorV2):
    """Score every real record at theta_k, drop the selected ones, log, write the ledger."""

    def __init__(self, input_observation_space=None, input_action_space=None, *,
                 learner: Any = None) -> None:
        super().__init__(input_observation_space, input_action_space)
        self._learner = learner

    def __call__(self, *, rl_module: Any, episodes: list, batch: dict, metrics=None,
                 **kwargs) -> dict:
        for module_id in list(batch):
            batch[module_id] = self._learner.filter_module_batch(
                module_id, batch[module_id], episodes_of_module(self, episodes, module_id)
            )
        self._learner.mark_update_start()
        return batch
