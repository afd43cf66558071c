"""IIF on RLlib's new API stack: config and algorithm, learners, connectors, module bridge.

``algorithm`` (IIFConfig, IIFPPO) -> ``iif_learner`` (the pipeline and state) ->
``influence_round`` (score -> select -> drop -> metrics -> ledger) over
``connectors/`` (one piece per file) and ``ppo_learner`` (the paper's PPO semantics);
``settings`` owns every ``learner_config_dict`` key; ``module`` and ``module_bridge`` hold the
RLModule and its view as a functional policy; ``preset_config`` builds a config from a preset;
``results`` says where the round's metrics sit in RLlib's result dict.

The names below load on first use, so ``iif_ray.rllib.settings`` (what the CLI validates
input with) is importable without importing RLlib.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "IIFConfig": "iif_ray.rllib.algorithm",
    "IIFPPO": "iif_ray.rllib.algorithm",
    "IIFPPOTorchLearner": "iif_ray.rllib.iif_learner",
    "build_config": "iif_ray.rllib.preset_config",
    "AttributionSettings": "iif_ray.rllib.settings",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'iif_ray.rllib' has no attribute {name!r}")
