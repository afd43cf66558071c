"""The sampling side's two connector pieces: one env-to-module, one module-to-env.

RLlib's default env-to-module pipeline runs six pieces per environment step (observations
from episodes, time rank, states, batching, numpy-to-tensor) and its module-to-env pipeline
seven (sample actions, tensor-to-numpy, unbatch, unmap, time rank, action normalisation,
listify), each wrapped in a timer, plus two episode-length metrics per step. For a
single-agent, non-recurrent policy with flat (Box) observations and discrete actions all of
that reduces to "stack the observations into one tensor" and "sample actions, return numpy
arrays". :class:`ObservationsToTensor` and :class:`SampleActions` do exactly that, in lean
pipelines that call their piece without timers.

Same results: the pieces produce the batch RLlib's pipelines produce (the same observation
tensor; actions sampled with the same distribution calls, hence the same random draws), so
sampled episodes are identical (``tests/rllib/test_lean_sampling.py``). Not logged any more:
RLlib's per-piece connector timers and ``env_to_module_sum_episodes_length_in/out``.

Other setups (multi-agent, recurrent modules, Dict/Tuple observations, continuous actions,
user connectors) keep RLlib's default pipelines: :func:`lean_sampling_unsupported` names why.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.connectors.env_to_module import EnvToModulePipeline
from ray.rllib.connectors.module_to_env import ModuleToEnvPipeline
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.multi_rl_module import MultiRLModule
from ray.rllib.utils.annotations import override


def lean_sampling_unsupported(config: Any, obs_space: gym.Space | None,
                              act_space: gym.Space | None) -> str | None:
    """Why RLlib's default sampling pipelines must stay (``""``: switched off), else None."""
    if not getattr(config, "lean_connectors", False):
        return ""
    if config.is_multi_agent:
        return "multi-agent"
    if (config._env_to_module_connector is not None
            or config._module_to_env_connector is not None):
        return "user connectors"
    if not (config.add_default_connectors_to_env_to_module_pipeline
            and config.add_default_connectors_to_module_to_env_pipeline):
        return "default connectors switched off"
    model = config.model_config or {}
    if model.get("use_lstm") or model.get("use_attention"):
        return "recurrent module"
    if not isinstance(obs_space, gym.spaces.Box):
        return f"observation space {obs_space}"
    if not isinstance(act_space, gym.spaces.Discrete):
        return f"action space {act_space}"
    return None


class ObservationsToTensor(ConnectorV2):
    """Env-to-module: this step's observation of every sub-environment, as one tensor.

    The env runner passes the step's observations (one per sub-environment, the ones it
    just stored in the episodes); they are stacked in sub-environment order and converted
    as RLlib's ``NumpyToTensor`` does (float64 becomes float32).
    """

    def __init__(self, input_observation_space=None, input_action_space=None, *,
                 device: Any = None) -> None:
        super().__init__(input_observation_space, input_action_space)
        self._device = device

    @override(ConnectorV2)
    def __call__(self, *, rl_module: Any, batch: dict, episodes: list, **kwargs: Any) -> dict:
        obs = kwargs.get(Columns.OBS)
        if obs is None:
            obs = [e.get_observations(-1) for e in episodes]
        # The vector env's batched array as it is (the same rows np.stack would copy).
        tensor = torch.from_numpy(obs if isinstance(obs, np.ndarray) else np.stack(obs))
        if tensor.dtype == torch.float64:
            tensor = tensor.float()
        if self._device is not None:
            tensor = tensor.to(self._device)
        batch[Columns.OBS] = tensor
        return batch


class SampleActions(ConnectorV2):
    """Module-to-env: actions (and their log-probabilities) from the module's output, as
    NumPy arrays indexed by sub-environment.

    The same distribution calls as RLlib's ``GetActions`` (exploration or deterministic
    inference distribution, ``sample()``, ``logp()``), so the same random draws.
    """

    @override(ConnectorV2)
    def __call__(self, *, rl_module: Any, batch: dict, episodes: list,
                 explore: bool | None = None, **kwargs: Any) -> dict:
        module = (rl_module[DEFAULT_MODULE_ID] if isinstance(rl_module, MultiRLModule)
                  else rl_module)
        if Columns.ACTIONS not in batch and Columns.ACTION_DIST_INPUTS in batch:
            cls = (module.get_exploration_action_dist_cls() if explore
                   else module.get_inference_action_dist_cls())
            dist = cls.from_logits(batch[Columns.ACTION_DIST_INPUTS])
            if not explore:
                dist = dist.to_deterministic()
            actions = dist.sample()
            batch[Columns.ACTIONS] = actions
            if Columns.ACTION_LOGP not in batch:
                batch[Columns.ACTION_LOGP] = dist.logp(actions)
        return {k: v.detach().cpu().numpy() if torch.is_tensor(v) else v
                for k, v in batch.items()}


def _run_pieces(pipeline: Any, batch: dict | None, **kwargs: Any) -> dict:
    batch = batch if batch is not None else {}
    for piece in pipeline.connectors:
        batch = piece(batch=batch, **kwargs)
    return batch


class LeanEnvToModulePipeline(EnvToModulePipeline):
    """RLlib's env-to-module pipeline, calling its pieces without per-call timers and
    episode-length metrics."""

    @override(EnvToModulePipeline)
    def __call__(self, *, rl_module: Any, batch: dict | None = None, episodes: list,
                 explore: bool, shared_data: dict | None = None, metrics: Any = None,
                 **kwargs: Any) -> dict:
        return _run_pieces(self, batch, rl_module=rl_module, episodes=episodes,
                           explore=explore, shared_data=shared_data or {}, metrics=metrics,
                           **kwargs)


class LeanModuleToEnvPipeline(ModuleToEnvPipeline):
    """RLlib's module-to-env pipeline, calling its pieces without per-call timers."""

    @override(ModuleToEnvPipeline)
    def __call__(self, *, rl_module: Any, batch: dict, episodes: list,
                 explore: bool | None = None, shared_data: dict | None = None,
                 metrics: Any = None, **kwargs: Any) -> dict:
        return _run_pieces(self, batch, rl_module=rl_module, episodes=episodes,
                           explore=explore, shared_data=shared_data or {}, metrics=metrics,
                           **kwargs)
