"""The env runners IIF configs use: a lean sampling loop, and an optional per-round restart.

**The lean sampling loop** (:class:`LeanEnvRunner`). With the lean connector pipelines
(:mod:`iif_ray.rllib.connectors.sampling`) in place, what RLlib's
``SingleAgentEnvRunner._sample`` adds per environment step is bookkeeping: two timers (module
inference, env step), a Prometheus counter, ``unbatch`` of observations and actions through
``tree``, and an ``on_episode_step`` call per sub-environment even when no callback defines
it. For one LunarLander environment that is several percent of a round. The lean loop takes
the same steps in the same order (forward, module-to-env, env step, episode
``add_env_reset``/``add_env_step`` with the same extra model outputs, env-to-module, episode
callbacks, cut and return), calls ``on_episode_step`` only where a callback defines it, and
logs the sampling counters once per call, so the episodes are RLlib's
(``tests/rllib/test_lean_sampling.py``). Not logged any more: RLlib's
``rlmodule_inference_timer`` and ``env_step_timer``. Everything the lean pipelines do not
cover (random actions, sampling by episodes, RLlib's default pipelines) runs RLlib's loop.

**The per-round restart** (:class:`RoundRestartEnvRunner`). The paper's official IIF
pipeline runs every round as a new process: the policy is loaded, the environment is created
and seeded again, and 2048 steps are collected from fresh episodes; the episode cut at the
end of the previous round is never continued. Its PPO baseline, like RLlib, samples
continuously. ``IIFConfig.protocol(restart_per_round=True)`` reproduces the per-round
restart with this runner, so the two protocols can be compared with everything else equal.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from ray.rllib.callbacks.callbacks import RLlibCallback
from ray.rllib.core.columns import Columns
from ray.rllib.env.env_runner import ENV_STEP_FAILURE, NUM_ENV_STEP_FAILURES_LIFETIME
from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner
from ray.rllib.env.single_agent_episode import SingleAgentEpisode
from ray.rllib.utils import force_list
from ray.rllib.utils.annotations import override
from ray.rllib.utils.metrics import WEIGHTS_SEQ_NO

from iif_ray.rllib.connectors.sampling import LeanEnvToModulePipeline, LeanModuleToEnvPipeline

logger = logging.getLogger(__name__)


def round_seed(seed: int | None, round_index: int, runner_index: int = 0) -> int:
    """A distinct environment seed per (training seed, round, runner), stable across resumes."""
    seq = np.random.SeedSequence([int(seed or 0), int(round_index), int(runner_index)])
    return int(seq.generate_state(1)[0])


class LeanEnvRunner(SingleAgentEnvRunner):
    """RLlib's single-agent env runner with a lean loop for ``sample(num_timesteps=...)``."""

    def lean_loop(self) -> bool:
        """Whether the lean loop covers this runner: both lean connector pipelines in place."""
        return (isinstance(self._env_to_module, LeanEnvToModulePipeline)
                and isinstance(self._module_to_env, LeanModuleToEnvPipeline))

    @override(SingleAgentEnvRunner)
    def _sample(self, *, num_timesteps: int | None = None, num_episodes: int | None = None,
                explore: bool, random_actions: bool = False,
                force_reset: bool = False) -> list[SingleAgentEpisode]:
        if num_timesteps is None or num_episodes is not None or random_actions or (
                not self.lean_loop()):
            return super()._sample(num_timesteps=num_timesteps, num_episodes=num_episodes,
                                   explore=explore, random_actions=random_actions,
                                   force_reset=force_reset)
        if force_reset or self._needs_initial_reset:
            self._reset_envs_and_episodes(explore)
        done: list[SingleAgentEpisode] = []
        ts = self._lean_steps(num_timesteps, explore, done)
        self._done_episodes_for_metrics.extend(done)
        chunks = []
        for episode in self._ongoing_episodes:
            if episode.t == 0:
                continue
            episode.validate()
            self._ongoing_episodes_for_metrics[episode.id_].append(episode)
            chunks.append(episode.to_numpy() if self.episodes_to_numpy else episode)
        lookback = self.config.episode_lookback_horizon
        self._ongoing_episodes = [e.cut(len_lookback_buffer=lookback)
                                  for e in self._ongoing_episodes]
        self._log_env_steps(metric=self._metrics_num_env_steps_sampled, num_steps=ts)
        self._increase_sampled_metrics(ts, len(done))
        return done + chunks

    def _lean_steps(self, num_timesteps: int, explore: bool,
                    done: list[SingleAgentEpisode]) -> int:
        """Step every sub-environment until ``num_timesteps`` env steps are taken; finished
        episodes go to ``done``. Returns the steps taken (RLlib's ``ts``)."""
        ts = vector_steps = 0
        runners = self.config.num_env_runners or 1
        lifetime = self.num_env_steps_sampled_lifetime
        step_callbacks = self._episode_step_callbacks()  # fixed for the call: ask once
        while ts < num_timesteps:
            to_module, self._cached_to_module = self._cached_to_module, None
            if explore:
                to_env = self.module.forward_exploration(
                    to_module, t=(lifetime // runners + ts) * runners)
            else:
                to_env = self.module.forward_inference(to_module)
            to_env = self._module_to_env(rl_module=self.module, batch=to_env,
                                         episodes=self._ongoing_episodes, explore=explore,
                                         shared_data=self._shared_data, metrics=self.metrics)
            actions = to_env.pop(Columns.ACTIONS)
            results = self._step_envs(to_env.pop(Columns.ACTIONS_FOR_ENV, actions))
            if results is ENV_STEP_FAILURE:  # RLlib's handling: reset and start over
                ts = 0
                self._reset_envs_and_episodes(explore)
                continue
            vector_steps += 1
            ts += self._add_steps(results, actions, to_env, explore, done, step_callbacks)
        if vector_steps:
            self._log_env_steps(metric=self._metrics_num_try_env_step, num_steps=vector_steps)
        return ts

    def _episode_step_callbacks(self) -> bool:
        """Whether ``on_episode_step`` does anything: a registered function, or a callback
        class that overrides RLlib's no-op method. When nothing does, the lean loop skips
        the call (one per sub-environment and step, building its keyword arguments and
        walking the env's wrappers for ``env.unwrapped``)."""
        base = RLlibCallback.on_episode_step
        return bool(force_list(self.config.callbacks_on_episode_step)) or any(
            getattr(type(c), "on_episode_step", base) is not base
            for c in force_list(self._callbacks))

    def _step_envs(self, actions: Any) -> Any:
        """``env.step(actions)``, failures handled as RLlib's ``_try_env_step`` handles
        them (recreate the env and return ``ENV_STEP_FAILURE``, or raise), untimed."""
        try:
            return self.env.step(actions)
        except Exception as e:
            self.metrics.log_value(NUM_ENV_STEP_FAILURES_LIFETIME, 1, reduce="lifetime_sum")
            if not self.config.restart_failed_sub_environments:
                raise RuntimeError(f"{type(self).__name__}: environment step failed and "
                                   "restart_failed_sub_environments is off") from e
            logger.exception("%s: environment step failed; resetting the env(s): %s",
                             type(self).__name__, e)
            self.make_env()
            return ENV_STEP_FAILURE

    def _add_steps(self, results: tuple, actions: Any, to_env: dict, explore: bool,
                   done: list[SingleAgentEpisode], step_callbacks: bool) -> int:
        """One vector step into the episodes, the next module input, the callbacks; returns
        the env steps added (sub-environments that were not just reset)."""
        observations, rewards, terminateds, truncateds, infos = results
        episodes = self._ongoing_episodes
        started = set()
        added = 0
        for i, episode in enumerate(episodes):
            if not episode.is_reset:
                episode.add_env_reset(observation=observations[i], infos=infos[i])
                started.add(i)
                continue
            extra = {k: v[i] for k, v in to_env.items()}
            extra[WEIGHTS_SEQ_NO] = self._weights_seq_no
            episode.add_env_step(observation=observations[i], action=actions[i],
                                 reward=rewards[i], infos=infos[i],
                                 terminated=terminateds[i], truncated=truncateds[i],
                                 extra_model_outputs=extra)
            added += 1
        self._cached_to_module = self._env_to_module(
            episodes=episodes, batch={}, explore=explore, rl_module=self.module,
            shared_data=self._shared_data, metrics=self.metrics,
            **{Columns.OBS: observations, Columns.ACTIONS: actions, Columns.REWARDS: rewards,
               Columns.INFOS: infos, Columns.TERMINATEDS: terminateds,
               Columns.TRUNCATEDS: truncateds})
        for i in range(self.num_envs):
            if i in started:
                self._make_on_episode_callback("on_episode_start", i, episodes)
                continue
            if step_callbacks:
                self._make_on_episode_callback("on_episode_step", i, episodes)
            if episodes[i].is_done:
                self._make_on_episode_callback("on_episode_end", i, episodes)
                done.append(episodes[i].to_numpy() if self.episodes_to_numpy else episodes[i])
                self._new_episode(i, episodes)
        return added


class RoundRestartEnvRunner(LeanEnvRunner):
    """``restart_episodes(seed)`` makes the next ``sample()`` reset every sub-environment
    with ``seed`` (RLlib's own initial-reset path), dropping the episodes in progress."""

    def restart_episodes(self, seed: int) -> None:
        self._seed = int(seed)
        self._needs_initial_reset = True
