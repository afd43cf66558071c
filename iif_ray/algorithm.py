"""``IIFConfig`` (PPOConfig plus ``.attribution(...)``) and ``IIFPPO`` (PPO + scorer resources)."""

from __future__ import annotations

import contextlib
from typing import Any

from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.algorithms.ppo import PPO, PPOConfig
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.tune.execution.placement_groups import PlacementGroupFactory
from ray.util import log_once

from iif_ray.envs import ensure_registered
from iif_ray.learner import (
    ADV_NORM_KEY,
    ADV_NORMS,
    OPTIMIZER_KEY,
    OPTIMIZERS,
    IIFPPOTorchLearner,
)
from iif_ray.modules import IIFPPOTorchRLModule
from iif_ray.settings import CONFIG_KEY, AttributionSettings

# IIF exists only on RLlib's new API stack; RLlib's one-time "you are on the new API stack"
# notice would be noise for every run, so it is marked as already shown.
log_once("IIFPPO_on_new_api_stack")


class IIFConfig(PPOConfig):
    """PPO config whose learner scores and filters every round.

    ``.attribution(mode="off")`` gives plain PPO through the identical code path, which is
    the baseline every IIF figure in this project is compared against.
    """

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or IIFPPO)
        self.learner_config_dict[CONFIG_KEY] = AttributionSettings().to_dict()

    def get_default_learner_class(self) -> type:
        return IIFPPOTorchLearner

    def get_default_rl_module_spec(self) -> RLModuleSpec:
        return RLModuleSpec(module_class=IIFPPOTorchRLModule)

    @property
    def attribution_settings(self) -> AttributionSettings:
        return AttributionSettings.from_dict(self.learner_config_dict.get(CONFIG_KEY))

    def attribution(self, **settings: Any) -> IIFConfig:
        """Set attribution options (see :class:`~iif_ray.settings.AttributionSettings`).

        Values are validated now, so a bad option fails at configuration time with a message
        naming it, not inside a remote learner.
        """
        merged = {**self.learner_config_dict.get(CONFIG_KEY, {}), **settings}
        self.learner_config_dict[CONFIG_KEY] = AttributionSettings.from_dict(merged).to_dict()
        return self

    def training(self, *, optimizer: str | dict | None = NotProvided,
                 advantage_normalization: str = NotProvided, **kwargs: Any) -> IIFConfig:
        """PPO's ``training(...)`` plus ``optimizer="adam"|"sgd"`` (or ``{"type": ..., **kw}``)
        and ``advantage_normalization="batch"|"minibatch"`` (SB3's choice: per minibatch)."""
        if advantage_normalization is not NotProvided:
            if advantage_normalization not in ADV_NORMS:
                raise ValueError(f"advantage_normalization must be one of {list(ADV_NORMS)}, "
                                 f"got {advantage_normalization!r}")
            self.learner_config_dict[ADV_NORM_KEY] = advantage_normalization
        if isinstance(optimizer, dict) and "type" not in optimizer:
            # RLlib's own (legacy) ``optimizer`` dict, e.g. from ``from_dict`` under Tune:
            # it is not ours, and must not overwrite the learner's optimizer choice.
            kwargs["optimizer"] = optimizer
            optimizer = NotProvided
        if optimizer is not NotProvided:
            spec = {"type": optimizer} if isinstance(optimizer, str) else dict(optimizer)
            if spec.get("type", "adam") not in OPTIMIZERS:
                raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {optimizer!r}")
            self.learner_config_dict[OPTIMIZER_KEY] = spec
        super().training(**kwargs)
        return self

    def validate(self) -> None:
        super().validate()
        self.attribution_settings  # noqa: B018  (raises on an invalid dict from Tune)
        if not issubclass(self.learner_class, IIFPPOTorchLearner):
            raise ValueError(
                "IIFConfig needs a learner derived from IIFPPOTorchLearner, "
                f"got {self.learner_class}"
            )


class IIFPPO(PPO):
    """PPO whose placement group also reserves the attribution pool's scorer actors.

    Under Tune, actors created inside a trial are captured by the trial's placement group; with
    no room reserved they would wait forever without an error.
    """

    @classmethod
    def get_default_config(cls) -> IIFConfig:
        return IIFConfig()

    def __init__(self, config: AlgorithmConfig | dict | None = None, *args: Any,
                 **kwargs: Any) -> None:
        # Env runners look the env up by name; in a fresh process (a restored checkpoint, a
        # Tune trial on another node) our ``iif/...`` creators must be registered first.
        env = config.get("env") if isinstance(config, dict) else getattr(config, "env", None)
        ensure_registered(env)
        super().__init__(config, *args, **kwargs)

    def cleanup(self) -> None:
        # Scorer actors belong to the learners' processes; stop them before the learners go.
        if getattr(self, "learner_group", None) is not None:
            # A learner that already died took its scorers with it.
            with contextlib.suppress(Exception):
                self.learner_group.foreach_learner(lambda learner: learner.shutdown_scorer())
        super().cleanup()

    @classmethod
    def default_resource_request(
        cls, config: AlgorithmConfig | dict
    ) -> PlacementGroupFactory:
        pgf = super().default_resource_request(config)
        cfg = config if isinstance(config, AlgorithmConfig) else (
            cls.get_default_config().update_from_dict(config))
        settings = AttributionSettings.from_dict(cfg.learner_config_dict.get(CONFIG_KEY))
        if settings.mode == "off" or settings.num_scorers == 0:
            return pgf
        # Every learner (the local one counts as one) owns its own pool of scorers.
        num_pools = max(1, cfg.num_learners)
        bundle = {"CPU": settings.num_cpus_per_scorer}
        if settings.num_gpus_per_scorer:
            bundle["GPU"] = settings.num_gpus_per_scorer
        return PlacementGroupFactory(
            bundles=[*pgf.bundles, *([bundle] * (settings.num_scorers * num_pools))],
            strategy=pgf.strategy,
        )
