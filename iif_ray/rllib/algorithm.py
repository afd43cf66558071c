"""``IIFConfig`` (PPOConfig plus ``.attribution(...)``) and ``IIFPPO`` (PPO + scorer resources)."""

from __future__ import annotations

import contextlib
from typing import Any

from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.algorithms.ppo import PPO, PPOConfig
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.utils.annotations import override
from ray.tune.execution.placement_groups import PlacementGroupFactory
from ray.util import log_once

from iif_ray.rllib.connectors.sampling import (
    LeanEnvToModulePipeline,
    LeanModuleToEnvPipeline,
    ObservationsToTensor,
    SampleActions,
    lean_sampling_unsupported,
)
from iif_ray.rllib.env_registration import ensure_registered
from iif_ray.rllib.env_runner import LeanEnvRunner, RoundRestartEnvRunner, round_seed
from iif_ray.rllib.iif_learner import IIFPPOTorchLearner
from iif_ray.rllib.module import IIFPPOTorchRLModule
from iif_ray.rllib.settings import (
    AttributionSettings,
    read_settings,
    write_advantage_normalization,
    write_optimizer,
    write_settings,
    write_update_options,
)

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
        write_settings(self.learner_config_dict)
        self.restart_per_round = False
        self.lean_connectors = True

    @override(PPOConfig)
    def env_runners(self, *, lean_connectors: bool = NotProvided, **kwargs: Any) -> IIFConfig:
        """RLlib's ``env_runners(...)`` plus the choice of sampling connectors.

        Args:
            lean_connectors: one env-to-module and one module-to-env connector piece instead
                of RLlib's default pipelines, where they cover the setup (default True; see
                :mod:`iif_ray.rllib.connectors.sampling`); same episodes, less overhead.
            **kwargs: RLlib's options.

        Returns:
            This config, for chaining.
        """
        if lean_connectors is not NotProvided:
            self.lean_connectors = bool(lean_connectors)
        super().env_runners(**kwargs)
        return self

    @override(PPOConfig)
    def build_env_to_module_connector(self, env=None, spaces=None, device=None) -> Any:
        pipeline = super().build_env_to_module_connector(env=env, spaces=spaces, device=device)
        if lean_sampling_unsupported(self, *_single_spaces(pipeline)) is not None:
            return pipeline
        return LeanEnvToModulePipeline(
            input_observation_space=pipeline.input_observation_space,
            input_action_space=pipeline.input_action_space,
            connectors=[ObservationsToTensor(device=device)])

    @override(PPOConfig)
    def build_module_to_env_connector(self, env=None, spaces=None) -> Any:
        pipeline = super().build_module_to_env_connector(env=env, spaces=spaces)
        if lean_sampling_unsupported(self, *_single_spaces(pipeline)) is not None:
            return pipeline
        return LeanModuleToEnvPipeline(
            input_observation_space=pipeline.input_observation_space,
            input_action_space=pipeline.input_action_space,
            connectors=[SampleActions()])

    @override(PPOConfig)
    def get_default_learner_class(self) -> type:
        return IIFPPOTorchLearner

    @override(PPOConfig)
    def get_default_rl_module_spec(self) -> RLModuleSpec:
        return RLModuleSpec(module_class=IIFPPOTorchRLModule)

    @property
    def attribution_settings(self) -> AttributionSettings:
        """The validated attribution settings this config carries."""
        return read_settings(self.learner_config_dict)

    def attribution(self, **settings: Any) -> IIFConfig:
        """Set attribution options, validated now.

        A bad option fails at configuration time with a message naming it, not inside a
        remote learner.

        Args:
            **settings: fields of :class:`~iif_ray.rllib.settings.AttributionSettings`
                (``mode``, ``target``, ``selection``, ``drop_fraction``, ``num_scorers``,
                ``ledger_dir``, ...).

        Returns:
            This config, for chaining.

        Raises:
            ValueError: an unknown setting or a value outside its accepted range.
        """
        write_settings(self.learner_config_dict, **settings)
        return self

    def protocol(self, *, restart_per_round: bool = NotProvided) -> IIFConfig:
        """How rounds meet the environment.

        Args:
            restart_per_round: every round starts from fresh episodes of environments seeded
                anew (seed derived from the training seed and the round), as the paper's
                one-process-per-round IIF pipeline does; ``False`` (RLlib's way, and the
                paper's PPO baseline's) continues the episodes in progress.

        Returns:
            This config, for chaining.
        """
        if restart_per_round is not NotProvided:
            self.restart_per_round = bool(restart_per_round)
            if self.restart_per_round:
                self.env_runners(env_runner_cls=RoundRestartEnvRunner)
        return self

    @override(PPOConfig)
    def training(self, *, optimizer: str | dict | None = NotProvided,
                 advantage_normalization: str = NotProvided, fast_update: bool = NotProvided,
                 minibatch_metrics: bool = NotProvided, **kwargs: Any) -> IIFConfig:
        """PPO's ``training(...)`` plus two options of the paper's PPO and two of the update
        loop.

        Args:
            optimizer: ``"adam"``, ``"sgd"`` or ``{"type": ..., **torch_kwargs}``; the learning
                rate stays RLlib's ``lr``.
            advantage_normalization: ``"batch"`` (once per round) or ``"minibatch"`` (SB3's
                choice, which the presets use).
            fast_update: the lean minibatch loop (default True): same weights and metrics as
                RLlib's stock loop, less bookkeeping (see :mod:`iif_ray.rllib.ppo_learner`).
            minibatch_metrics: with the lean loop, log the loss terms of every minibatch (as
                RLlib does) instead of the round's last one only (default False).
            **kwargs: RLlib's PPO training options.

        Returns:
            This config, for chaining.

        Raises:
            ValueError: an unknown optimizer or normalisation scope, or a non-boolean
                update-loop option.
        """
        loop = {k: v for k, v in (("fast", fast_update), ("minibatch_metrics", minibatch_metrics))
                if v is not NotProvided}
        if loop:
            write_update_options(self.learner_config_dict, **loop)
        if advantage_normalization is not NotProvided:
            write_advantage_normalization(self.learner_config_dict, advantage_normalization)
        if isinstance(optimizer, dict) and "type" not in optimizer:
            # RLlib's own (legacy) ``optimizer`` dict, e.g. from ``from_dict`` under Tune:
            # it is not ours, and must not overwrite the learner's optimizer choice.
            kwargs["optimizer"] = optimizer
            optimizer = NotProvided
        if optimizer is not NotProvided:
            write_optimizer(self.learner_config_dict, optimizer)
        super().training(**kwargs)
        return self

    @override(PPOConfig)
    def validate(self) -> None:
        super().validate()
        self.attribution_settings  # noqa: B018  (raises on an invalid dict from Tune)
        if (self.env_runner_cls is None and self.enable_env_runner_and_connector_v2
                and not self.output and not self.is_multi_agent):
            # Where RLlib would pick SingleAgentEnvRunner: its subclass with the lean loop
            # (which runs RLlib's own loop wherever the lean connectors are off).
            self.env_runner_cls = LeanEnvRunner
        if self.restart_per_round and not issubclass(self.env_runner_cls or object,
                                                     RoundRestartEnvRunner):
            raise ValueError("restart_per_round needs env_runner_cls=RoundRestartEnvRunner "
                             f"(or a subclass), got {self.env_runner_cls}")
        if not issubclass(self.learner_class, IIFPPOTorchLearner):
            raise ValueError(
                "IIFConfig needs a learner derived from IIFPPOTorchLearner, "
                f"got {self.learner_class}"
            )


def _single_spaces(pipeline: Any) -> tuple[Any, Any]:
    """The single-environment observation and action spaces RLlib's builder resolved."""
    return pipeline.input_observation_space, pipeline.input_action_space


class IIFPPO(PPO):
    """PPO whose placement group also reserves the attribution pool's scorer actors.

    Under Tune, actors created inside a trial are captured by the trial's placement group; with
    no room reserved they would wait forever without an error.
    """

    @classmethod
    @override(PPO)
    def get_default_config(cls) -> IIFConfig:
        return IIFConfig()

    def __init__(self, config: AlgorithmConfig | dict | None = None, *args: Any,
                 **kwargs: Any) -> None:
        # Env runners look the env up by name; in a fresh process (a restored checkpoint, a
        # Tune trial on another node) our ``iif/...`` creators must be registered first.
        env = config.get("env") if isinstance(config, dict) else getattr(config, "env", None)
        ensure_registered(env)
        super().__init__(config, *args, **kwargs)

    @override(PPO)
    def training_step(self) -> None:
        if self.config.restart_per_round:
            seed, k = self.config.seed, self.iteration  # iteration survives checkpoints

            def restart(runner) -> None:
                runner.restart_episodes(round_seed(seed, k, runner.worker_index))

            self.env_runner_group.foreach_env_runner(restart, local_env_runner=True)
        return super().training_step()

    @override(PPO)
    def cleanup(self) -> None:
        # Scorer actors belong to the learners' processes; stop them before the learners go.
        if getattr(self, "learner_group", None) is not None:
            # A learner that already died took its scorers with it.
            with contextlib.suppress(Exception):
                self.learner_group.foreach_learner(lambda learner: learner.shutdown_scorer())
        super().cleanup()

    @classmethod
    @override(PPO)
    def default_resource_request(
        cls, config: AlgorithmConfig | dict
    ) -> PlacementGroupFactory:
        pgf = super().default_resource_request(config)
        cfg = config if isinstance(config, AlgorithmConfig) else (
            cls.get_default_config().update_from_dict(config))
        settings = read_settings(cfg.learner_config_dict)
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
