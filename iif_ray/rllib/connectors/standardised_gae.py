"""GAE as RLlib computes it, keeping the raw advantages, standardised over real rows only.

Replaces RLlib's ``GeneralAdvantageEstimation`` in the learner pipeline. Same maths (RLlib's
own ``compute_value_targets``); two differences, both needed by IIF:

* the raw (unstandardised) advantages stay in the batch under :data:`ADVANTAGES_RAW`: the
  return target ``mean_j A_j log pi(a_j|s_j)`` is defined on them;
* mean and standard deviation are taken over the real rows (``loss_mask``) only. RLlib's piece
  also counts the phantom bootstrap rows it appends to every episode chunk
  (ray-project/ray#57989), so dropping records would shift everyone else's advantages.

Pre-conditions: the batch holds ``rewards``, ``terminateds``, ``truncateds``, ``loss_mask``
and everything the module's ``compute_values`` reads, per module; modules are non-recurrent.

Post-conditions: for every module with a value function, ``advantages`` (standardised over
real rows), ``value_targets`` and :data:`ADVANTAGES_RAW` are set, as tensors on the module's
device, one entry per batch row (phantom rows included; the influence filter removes them).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis.value_function_api import ValueFunctionAPI
from ray.rllib.utils.annotations import override
from ray.rllib.utils.postprocessing.value_predictions import compute_value_targets

ADVANTAGES_RAW = "iif_advantages_raw"


class StandardisedGAE(ConnectorV2):
    """GAE advantages and value targets; standardised over the real (loss-mask) rows."""

    def __init__(self, input_observation_space=None, input_action_space=None, *,
                 gamma: float, lambda_: float) -> None:
        super().__init__(input_observation_space, input_action_space)
        self.gamma = gamma
        self.lambda_ = lambda_

    @override(ConnectorV2)
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
