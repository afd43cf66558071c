"""The lean sampling path (connector pieces and env-runner loop) gives the episodes RLlib's
default pipelines and ``SingleAgentEnvRunner`` give."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ray.rllib.callbacks.callbacks import RLlibCallback
from ray.rllib.connectors.env_to_module import EnvToModulePipeline
from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

from iif_ray.presets import get_preset
from iif_ray.rllib import IIFConfig, build_config
from iif_ray.rllib.connectors.sampling import LeanEnvToModulePipeline, LeanModuleToEnvPipeline
from iif_ray.rllib.env_runner import LeanEnvRunner


def sample(cfg: IIFConfig, steps: int, explore: bool = True,
           runner_cls: type = SingleAgentEnvRunner) -> tuple[SingleAgentEnvRunner, list]:
    runner = runner_cls(config=cfg)
    torch.manual_seed(0)  # action sampling draws from torch's global stream
    episodes = runner.sample(num_timesteps=steps, explore=explore)
    episodes += runner.sample(num_timesteps=steps, explore=explore)  # continues episodes
    return runner, episodes


class EndRecorder(RLlibCallback):
    """What an ``on_episode_end`` callback sees of the finished episode."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple] = []

    def on_episode_end(self, *, episode, env_index, env_runner, **kwargs) -> None:
        self.seen.append((env_index, len(episode), episode.is_terminated,
                          episode.is_truncated, float(np.sum(episode.get_rewards())),
                          float(np.sum(episode.get_observations())),
                          [len(e) for e in env_runner._ongoing_episodes]))  # the others too


def assert_same_episode(a, b, explore: bool) -> None:
    """Everything an episode holds but its random id and wall-clock times."""
    assert (a.t_started, a.t, len(a), a.is_terminated, a.is_truncated) == (
        b.t_started, b.t, len(b), b.is_terminated, b.is_truncated)
    assert (a.is_numpy, a.observations.lookback) == (b.is_numpy, b.observations.lookback)
    np.testing.assert_array_equal(a.get_observations(), b.get_observations())
    np.testing.assert_array_equal(a.get_actions(), b.get_actions())
    np.testing.assert_array_equal(a.get_rewards(), b.get_rewards())
    assert a.get_infos() == b.get_infos()
    assert list(a.extra_model_outputs) == list(b.extra_model_outputs)
    for key in a.extra_model_outputs:
        np.testing.assert_array_equal(a.get_extra_model_outputs(key),
                                      b.get_extra_model_outputs(key))
        assert a.extra_model_outputs[key].lookback == b.extra_model_outputs[key].lookback
    if explore and len(a):
        assert {"action_logp", "action_dist_inputs"} <= set(a.extra_model_outputs)
    assert a.get_duration_s() >= 0.0
    assert abs(a.get_duration_s() - b.get_duration_s()) < 0.5  # wall clock, not exact
    a.validate()


@pytest.mark.parametrize(("num_envs", "explore", "limit", "ends"), [
    (1, True, None, False), (4, True, None, False), (4, False, None, True),
    (5, True, 23, False), (5, True, 23, True)])
def test_lean_connectors_sample_rllibs_episodes(num_envs, explore, limit, ends) -> None:
    """The lean loop writes episodes in bulk; they equal RLlib's step-by-step ones, also
    across a cut (the second call continues the first's episodes), with time limits
    (``limit``: truncated episodes) and (``ends``) as an ``on_episode_end`` callback sees
    its episode and the others."""
    def cfg(lean: bool) -> IIFConfig:
        c = build_config(get_preset("cartpole"), algo="ppo", seed=3, num_envs=num_envs)
        if limit is not None:
            c.env_config["kwargs"] = {"max_episode_steps": limit}
        c = c.env_runners(lean_connectors=lean)
        return c.callbacks(EndRecorder) if ends else c

    lean_runner, lean = sample(cfg(True), 150, explore, LeanEnvRunner)
    stock_runner, stock = sample(cfg(False), 150, explore)
    assert lean_runner.lean_loop() and lean_runner.lean_pieces()
    assert type(stock_runner) is SingleAgentEnvRunner
    assert isinstance(lean_runner._env_to_module, LeanEnvToModulePipeline)
    assert isinstance(lean_runner._module_to_env, LeanModuleToEnvPipeline)
    assert type(stock_runner._env_to_module) is EnvToModulePipeline
    assert len(lean) == len(stock) > num_envs  # episodes completed and cut
    for a, b in zip(lean, stock, strict=True):
        assert_same_episode(a, b, explore)
    if limit is not None:
        assert any(e.is_truncated for e in lean)
    for a, b in zip(lean_runner._ongoing_episodes, stock_runner._ongoing_episodes,
                    strict=True):  # the successors the next call continues
        assert_same_episode(a, b, explore)
    if ends:
        seen = [[c.seen for c in r._callbacks if isinstance(c, EndRecorder)]
                for r in (lean_runner, stock_runner)]
        assert seen[0] == seen[1] and seen[0][0]
    assert sum(len(e) for e in lean) == sum(len(e) for e in stock) >= 2 * 150
    for key in ("num_env_steps_sampled", "num_episodes"):
        assert lean_runner.metrics.peek(key) == stock_runner.metrics.peek(key), key
    assert lean_runner.num_env_steps_sampled_lifetime == stock_runner.num_env_steps_sampled_lifetime


class StepCounter(RLlibCallback):
    def __init__(self) -> None:
        super().__init__()
        self.steps = 0

    def on_episode_step(self, **kwargs) -> None:
        self.steps += 1


def test_episode_step_callbacks_run_where_defined() -> None:
    """The lean loop skips RLlib's no-op ``on_episode_step``, and calls a defined one as
    often as RLlib's loop does."""
    def cfg(lean: bool) -> IIFConfig:
        return (build_config(get_preset("cartpole"), algo="ppo", seed=3, num_envs=4)
                .env_runners(lean_connectors=lean).callbacks(StepCounter))

    lean_runner, lean = sample(cfg(True), 100, runner_cls=LeanEnvRunner)
    stock_runner, stock = sample(cfg(False), 100)
    assert lean_runner._episode_callbacks("on_episode_step")
    for a, b in zip(lean, stock, strict=True):  # written step by step here
        assert_same_episode(a, b, explore=True)
    counts = [sum(c.steps for c in r._callbacks if isinstance(c, StepCounter))
              for r in (lean_runner, stock_runner)]
    assert counts[0] == counts[1] > 0
    plain = LeanEnvRunner(config=build_config(get_preset("cartpole"), algo="ppo"))
    assert not plain._episode_callbacks("on_episode_step")


def test_iif_configs_run_the_lean_loop() -> None:
    """Where RLlib would build a SingleAgentEnvRunner, an IIF config builds the lean one."""
    algo = build_config(get_preset("cartpole"), algo="ppo", seed=0).build_algo()
    try:
        assert type(algo.env_runner) is LeanEnvRunner and algo.env_runner.lean_loop()
        assert algo.train()["env_runners"]["num_env_steps_sampled"] > 0
    finally:
        algo.stop()


def test_continuous_actions_keep_rllibs_pipelines() -> None:
    cfg = build_config(get_preset("bipedalwalker"), algo="ppo")
    runner = SingleAgentEnvRunner(config=cfg)
    assert type(runner._env_to_module) is EnvToModulePipeline
    assert len(runner._module_to_env.connectors) > 1
    assert sum(len(e) for e in runner.sample(num_timesteps=20)) == 20
