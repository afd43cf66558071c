"""Real Ray: build the algorithm, train, checkpoint, restore, keep training."""

from __future__ import annotations

import os

import pytest
import torch
from ray.rllib.algorithms.algorithm import Algorithm

from iif_ray.presets import get_preset
from iif_ray.rllib import IIFPPO, IIFConfig, build_config

pytestmark = pytest.mark.ray


def small(cfg: IIFConfig) -> IIFConfig:
    return cfg.training(train_batch_size_per_learner=256, minibatch_size=64, num_epochs=2)


def learner_info(algo: Algorithm) -> dict:
    def read(learner):
        return {
            "cls": type(learner).__name__,
            "settings": learner.iif.to_dict(),
            "round_index": learner.round_index,
            "select_rng": learner._select_rng.bit_generator.state,
            "optimizer": type(learner.get_optimizer()).__name__,
        }

    return next(iter(algo.learner_group.foreach_learner(read))).get()


@pytest.mark.slow
def test_checkpoint_keeps_learner_settings_and_state(ray_local, tmp_path) -> None:
    ledger = tmp_path / "ledger"
    cfg = small(build_config(get_preset("cartpole"), algo="random", seed=3,
                             attribution={"drop_fraction": 0.3, "ledger_dir": str(ledger)}))
    algo = cfg.build_algo()
    for _ in range(2):
        algo.train()
    before = learner_info(algo)
    path = algo.save_to_path(str(tmp_path / "ckpt"))
    algo.stop()

    restored = Algorithm.from_checkpoint(path)
    try:
        assert isinstance(restored, IIFPPO)
        after = learner_info(restored)
        assert after == before
        assert after["cls"] == "IIFPPOTorchLearner" and after["optimizer"] == "SGD"
        assert after["settings"]["selection"] == "random"
        assert after["settings"]["drop_fraction"] == 0.3
        result = restored.train()
        assert learner_info(restored)["round_index"] == 3
        assert result["learners"]["default_policy"]["iif"]["frac_dropped"] > 0
        assert sorted(os.listdir(ledger))[-1] == "iter-000003-learner0.parquet"
    finally:
        restored.stop()


@pytest.mark.slow
def test_remote_env_runner_and_paper_preset_semantics(ray_local) -> None:
    cfg = small(build_config(get_preset("acrobot"), algo="iif", num_env_runners=1))
    assert cfg.lambda_ == 0.95 and cfg.use_kl_loss is False and cfg.grad_clip is None
    assert cfg.clip_param == 0.2 and cfg.vf_loss_coeff == 0.5 and cfg.entropy_coeff == 0.0
    algo = cfg.build_algo()
    try:
        result = algo.train()
        iif = result["learners"]["default_policy"]["iif"]
        assert iif["num_records"] >= 256 and 0 < iif["frac_dropped"] < 0.5
        assert result["num_env_steps_sampled_lifetime"] >= 256
    finally:
        algo.stop()


def test_bad_attribution_values_fail_at_configuration() -> None:
    with pytest.raises(ValueError, match=r"drop_fraction must be a number in \[0, 1\), got 1.5"):
        IIFConfig().attribution(drop_fraction=1.5)
    with pytest.raises(ValueError, match="mode must be one of"):
        IIFConfig().attribution(mode="sometimes")
    with pytest.raises(ValueError, match=r"unknown attribution settings \['drop_frac'\]"):
        IIFConfig().attribution(drop_frac=0.1)
    with pytest.raises(ValueError, match="num_scorers must be an integer >= 0, got -1"):
        IIFConfig().attribution(num_scorers=-1)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        IIFConfig().training(optimizer="rmsprop")


def test_config_dict_round_trip_keeps_the_optimizer_and_normalisation() -> None:
    """Tune rebuilds trial configs with ``from_dict``; RLlib's own legacy ``optimizer`` key
    must not reset the learner's optimizer (it once turned SGD presets into Adam)."""
    from iif_ray.rllib import IIFConfig
    from iif_ray.rllib.ppo_learner import make_optimizer

    cfg = build_config(get_preset("frozenlake"), algo="ppo")
    back = IIFConfig.from_dict(cfg.to_dict())
    assert back.learner_config_dict["optimizer"] == {"type": "sgd"}
    assert back.learner_config_dict["advantage_normalization"] == "minibatch"
    params = [torch.nn.Parameter(torch.zeros(2))]
    assert isinstance(make_optimizer(params, back.learner_config_dict["optimizer"]),
                      torch.optim.SGD)


@pytest.mark.parametrize("preset,continuous", [
    ("lunarlander", False), ("frozenlake", False), ("minigrid", False), ("highway", False),
    ("bipedalwalker", True), ("hopper", True),
])
def test_action_normalisation_only_where_actions_are_continuous(preset, continuous) -> None:
    cfg = build_config(get_preset(preset), algo="ppo")
    assert cfg.normalize_actions is continuous
    assert IIFConfig.from_dict(cfg.to_dict()).normalize_actions is continuous


def test_discrete_sampling_is_unchanged_without_action_normalisation() -> None:
    """For discrete actions RLlib's normalisation is a no-op: same seed, same episodes."""
    import numpy as np
    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

    def sample(normalize: bool) -> list:
        cfg = build_config(get_preset("lunarlander"), algo="ppo", num_envs=4).environment(
            normalize_actions=normalize)
        runner = SingleAgentEnvRunner(config=cfg)
        try:
            return runner.sample(num_timesteps=256, random_actions=False)
        finally:
            runner.stop()

    plain, normalised = sample(False), sample(True)
    assert len(plain) == len(normalised)
    for a, b in zip(plain, normalised, strict=True):
        for get in ("get_actions", "get_observations", "get_rewards"):
            np.testing.assert_array_equal(getattr(a, get)(), getattr(b, get)())
