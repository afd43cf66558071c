"""From a paper preset (plain data) to an :class:`~iif_ray.rllib.algorithm.IIFConfig`."""

from __future__ import annotations

from typing import Any

from iif_ray.presets import Preset, algo_settings
from iif_ray.rllib.algorithm import IIFConfig
from iif_ray.rllib.env_registration import has_continuous_actions, registered_name


def build_config(
    preset: Preset,
    *,
    algo: str = "iif",
    seed: int = 0,
    num_env_runners: int = 0,
    num_envs: int = 1,
    num_learners: int = 0,
    num_gpus_per_learner: float = 0.0,
    attribution: dict[str, Any] | None = None,
) -> IIFConfig:
    """An :class:`~iif_ray.rllib.algorithm.IIFConfig` with the preset's PPO semantics.

    Every RLlib default that differs from the paper's PPO is set explicitly here (see
    :mod:`iif_ray.presets`), so ``ppo`` and ``iif`` differ only by the attribution settings.

    Args:
        preset: the environment's preset (:func:`iif_ray.presets.get_preset`).
        algo: ``iif``, ``ppo`` (filter off), ``random`` or ``advantage`` (controls).
        seed: RLlib's seed for sampling, initialisation and the learner's RNGs.
        num_env_runners: remote EnvRunner actors (0: sample in the driver).
        num_envs: vectorised environments per runner; each round then holds ``num_envs``
            shorter rollout chunks instead of one stream (the paper used one environment).
        num_learners: remote learner actors (0: learn in the driver).
        num_gpus_per_learner: > 0 runs the PPO update and in-learner scoring on a GPU (with
            ``num_learners=0`` the local learner takes the driver's GPU).
        attribution: attribution settings overriding the preset's and the algo's.

    Returns:
        A config ready for ``build_algo()`` or a Tune ``param_space``.

    Raises:
        ValueError: an unknown algo or an invalid attribution setting.
    """
    settings = {"drop_fraction": preset.drop_fraction, **algo_settings(algo),
                **(attribution or {})}
    return (
        IIFConfig()
        .environment(registered_name(preset.env_id), env_config={"kwargs": preset.env_kwargs},
                     normalize_actions=has_continuous_actions(preset.env_id, preset.env_kwargs))
        .env_runners(num_env_runners=num_env_runners, num_envs_per_env_runner=num_envs)
        .learners(num_learners=num_learners, num_gpus_per_learner=num_gpus_per_learner)
        .training(
            optimizer=preset.optimizer,
            advantage_normalization=preset.advantage_normalization,
            lr=preset.lr,
            train_batch_size_per_learner=preset.steps_per_round,
            minibatch_size=preset.minibatch_size,
            num_epochs=preset.num_epochs,
            shuffle_batch_per_epoch=True,
            gamma=preset.gamma,
            lambda_=preset.lambda_,
            clip_param=preset.clip_param,
            vf_loss_coeff=preset.vf_loss_coeff,
            vf_clip_param=float("inf"),
            entropy_coeff=preset.entropy_coeff,
            use_kl_loss=False,
            kl_coeff=0.0,
            grad_clip=None,
        )
        .rl_module(model_config=dict(preset.model))
        .attribution(**settings)
        .debugging(seed=seed, log_level="ERROR")
    )
