"""The env runners IIF configs use: a lean sampling loop, and an optional per-round restart.

**The lean sampling loop** (:class:`LeanEnvRunner`). With the lean connector pipelines
(:mod:`iif_ray.rllib.connectors.sampling`) in place, what RLlib's
``SingleAgentEnvRunner._sample`` adds per environment step is bookkeeping: two timers (module
inference, env step), a Prometheus counter, ``unbatch`` of observations and actions through
``tree``, an ``on_episode_step`` call per sub-environment even when no callback defines it,
and ``SingleAgentEpisode.add_env_step`` per sub-environment (seven buffer appends, a dict of
model outputs, a clock read). The lean loop takes the same steps in the same order (forward,
module-to-env, env step, env-to-module, episode callbacks, cut and return) and writes the
episodes in bulk (:class:`_StepLog`): each vector step's arrays are kept as they come and an
episode's buffers are extended with its rows when it ends (before ``on_episode_end``) or the
call returns. It calls ``on_episode_step`` only where a callback defines it (and then, like
foreign connector pieces that might read episodes, writes every step at once), and logs the
sampling counters once per call. The episodes are RLlib's, item for item, flags, lookback
and successors included (``tests/rllib/test_lean_sampling.py``); their wall-clock times are
read once per vector step. Not logged any more: RLlib's ``rlmodule_inference_timer`` and
``env_step_timer``. Everything the lean pipelines do not cover (random actions, sampling by
episodes, RLlib's default pipelines) runs RLlib's loop.

**The per-round restart** (:class:`RoundRestartEnvRunner`). The paper's official IIF
pipeline runs every round as a new process: the policy is loaded, the environment is created
and seeded again, and 2048 steps are collected from fresh episodes; the episode cut at the
end of the previous round is never continued. Its PPO baseline, like RLlib, samples
continuously. ``IIFConfig.protocol(restart_per_round=True)`` reproduces the per-round
restart with this runner, so the two protocols can be compared with everything else equal.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
from ray.rllib.callbacks.callbacks import RLlibCallback
from ray.rllib.core.columns import Columns
from ray.rllib.env.env_runner import ENV_STEP_FAILURE, NUM_ENV_STEP_FAILURES_LIFETIME
from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner
from ray.rllib.env.single_agent_episode import SingleAgentEpisode
from ray.rllib.env.utils.infinite_lookback_buffer import InfiniteLookbackBuffer
from ray.rllib.utils import force_list
from ray.rllib.utils.annotations import override
from ray.rllib.utils.metrics import WEIGHTS_SEQ_NO

from iif_ray.rllib.connectors.sampling import (
    LeanEnvToModulePipeline,
    LeanModuleToEnvPipeline,
    ObservationsToTensor,
    SampleActions,
)

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
        # RLlib's order: cut first, so the successors hold lists (appending to a NumPy
        # lookback buffer would copy it on every step), then return the chunks as NumPy.
        lookback = self.config.episode_lookback_horizon
        successors = [e.cut(len_lookback_buffer=lookback) for e in self._ongoing_episodes]
        chunks = []
        for episode in self._ongoing_episodes:
            if episode.t == 0:
                continue
            episode.validate()
            self._ongoing_episodes_for_metrics[episode.id_].append(episode)
            chunks.append(episode.to_numpy() if self.episodes_to_numpy else episode)
        self._ongoing_episodes = successors
        self._log_env_steps(metric=self._metrics_num_env_steps_sampled, num_steps=ts)
        self._increase_sampled_metrics(ts, len(done))
        return done + chunks

    def _lean_steps(self, num_timesteps: int, explore: bool,
                    done: list[SingleAgentEpisode]) -> int:
        """Step every sub-environment until ``num_timesteps`` env steps are taken; finished
        episodes go to ``done``, the others hold every step taken. Returns the steps taken
        (RLlib's ``ts``)."""
        ts = vector_steps = 0
        runners = self.config.num_env_runners or 1
        lifetime = self.num_env_steps_sampled_lifetime
        # Fixed for the call: ask once.
        step_callbacks = self._episode_callbacks("on_episode_step")
        log = _StepLog(self._ongoing_episodes, self._weights_seq_no,
                       eager=step_callbacks or not self.lean_pieces(),
                       step_callbacks=step_callbacks,
                       event_callbacks=any(self._episode_callbacks(hook) for hook in (
                           "on_episode_created", "on_episode_start", "on_episode_end")))
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
                log.restart(self._ongoing_episodes)
                continue
            vector_steps += 1
            ts += self._add_steps(results, actions, to_env, explore, done, log)
        log.flush(self._ongoing_episodes)
        if vector_steps:
            self._log_env_steps(metric=self._metrics_num_try_env_step, num_steps=vector_steps)
        return ts

    def lean_pieces(self) -> bool:
        """Whether the lean pipelines hold only the lean pieces, which read this step's
        arrays and never the episodes (so the episodes may be written in bulk)."""
        return ([type(c) for c in self._env_to_module.connectors] == [ObservationsToTensor]
                and [type(c) for c in self._module_to_env.connectors] == [SampleActions])

    def _episode_callbacks(self, hook: str) -> bool:
        """Whether the episode callback ``hook`` does anything: a registered function, or
        a callback class that overrides RLlib's no-op method. Where ``on_episode_step``
        does nothing, the lean loop skips the call (one per sub-environment and step,
        building its keyword arguments and walking the env's wrappers for
        ``env.unwrapped``)."""
        base = getattr(RLlibCallback, hook)
        return bool(force_list(getattr(self.config, f"callbacks_{hook}"))) or any(
            getattr(type(c), hook, base) is not base for c in force_list(self._callbacks))

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
                   done: list[SingleAgentEpisode], log: _StepLog) -> int:
        """One vector step into the log (episodes of sub-environments that just reset get
        their reset observation now), the next module input, the callbacks; returns the env
        steps added (sub-environments that were not just reset)."""
        observations, rewards, terminateds, truncateds, infos = results
        episodes = self._ongoing_episodes
        started, log.fresh = log.fresh, []
        for i in started:
            episodes[i].add_env_reset(observation=observations[i], infos=infos[i])
        log.append(observations, actions, rewards, terminateds, truncateds, infos, to_env,
                   started)
        if log.eager:
            log.flush(episodes)
        self._cached_to_module = self._env_to_module(
            episodes=episodes, batch={}, explore=explore, rl_module=self.module,
            shared_data=self._shared_data, metrics=self.metrics,
            **{Columns.OBS: observations, Columns.ACTIONS: actions, Columns.REWARDS: rewards,
               Columns.INFOS: infos, Columns.TERMINATEDS: terminateds,
               Columns.TRUNCATEDS: truncateds})
        ended = np.flatnonzero(np.logical_or(terminateds, truncateds)).tolist()
        if started:
            ended = [i for i in ended if i not in started]
        if not (started or ended or log.step_callbacks):
            return self.num_envs
        if log.event_callbacks:  # they get the env runner: every episode complete so far
            log.flush(episodes)
        for i in range(self.num_envs):
            if i in started:
                self._make_on_episode_callback("on_episode_start", i, episodes)
                continue
            if log.step_callbacks:
                self._make_on_episode_callback("on_episode_step", i, episodes)
            if i in ended:
                log.flush_one(episodes[i], i)
                self._make_on_episode_callback("on_episode_end", i, episodes)
                done.append(episodes[i].to_numpy() if self.episodes_to_numpy else episodes[i])
                self._new_episode(i, episodes)
                log.fresh.append(i)
        return self.num_envs - len(started)


class _StepLog:
    """The vector steps of one sample call, written into the episodes in bulk.

    RLlib's loop adds every sub-environment's step to its episode as it comes
    (``SingleAgentEpisode.add_env_step``: seven lookback-buffer appends, a dict of extra
    model outputs and a clock read per sub-environment and step), a fifth of a sampling
    call for 16 LunarLander environments. The log keeps each vector step's arrays as the
    env and the module return them and extends an episode's buffers with its rows when
    the episode ends or the call returns: the same items in the same order, the same
    flags and last observation and info, and the clock read once per vector step.
    Where something may read an episode between steps (an ``on_episode_step`` callback,
    connector pieces other than the lean ones), ``eager`` writes every step right away;
    where episode created/start/end callbacks are defined (they get the env runner, hence
    every episode), all episodes are written before they run. Rewards and flags are copied
    as they come (RLlib takes their scalars at once; a vector env may reuse its arrays);
    observations and infos are kept as RLlib keeps them, by reference.
    """

    def __init__(self, episodes: list[SingleAgentEpisode], weights_seq_no: int, *,
                 eager: bool, step_callbacks: bool, event_callbacks: bool) -> None:
        self.eager, self.step_callbacks = eager, step_callbacks
        self.event_callbacks = event_callbacks
        self.seq_no = weights_seq_no
        self.steps: list[tuple] = []
        self.times: list[float] = []
        self.restart(episodes)

    def append(self, observations: Any, actions: Any, rewards: Any, terminateds: Any,
               truncateds: Any, infos: Any, to_env: dict, started: list[int]) -> None:
        self.steps.append((observations, actions, _copy(rewards), _copy(terminateds),
                           _copy(truncateds), infos, to_env))
        self.times.append(time.perf_counter())
        for i in started:  # the reset observation is in; its episode's steps come next
            self.first[i] = len(self.steps)

    def restart(self, episodes: list[SingleAgentEpisode]) -> None:
        """Start over with ``episodes`` (the env runner reset every sub-environment)."""
        self.steps.clear()
        self.times.clear()
        self.first = [0] * len(episodes)  # per sub-environment: its first unwritten step
        # Sub-environments whose episode awaits its reset observation (the next step's).
        self.fresh = [i for i, episode in enumerate(episodes) if not episode.is_reset]

    def flush(self, episodes: list[SingleAgentEpisode]) -> None:
        for i, episode in enumerate(episodes):
            self.flush_one(episode, i)

    def flush_one(self, episode: SingleAgentEpisode, i: int) -> None:
        """Write sub-environment ``i``'s logged steps into ``episode``, as
        ``add_env_step`` would have one by one."""
        a, b = self.first[i], len(self.steps)
        if a >= b:
            return
        self.first[i] = b
        rows = self.steps[a:b]
        observations = [s[0][i] for s in rows]
        infos = [s[5][i] or {} for s in rows]
        _extend(episode.observations, observations)
        _extend(episode.actions, [s[1][i] for s in rows])
        _extend(episode.rewards, [s[2][i] for s in rows])
        _extend(episode.infos, infos)
        extra = episode.extra_model_outputs
        outputs = {k: [s[6][k][i] for s in rows] for k in rows[0][6]}
        outputs[WEIGHTS_SEQ_NO] = [self.seq_no] * (b - a)
        for k, values in outputs.items():  # add_env_step's order: the module's, then seq
            if k in extra:
                _extend(extra[k], values)
            else:
                extra[k] = InfiniteLookbackBuffer(values)
        episode.t += b - a
        episode.is_terminated = rows[-1][3][i]
        episode.is_truncated = rows[-1][4][i]
        episode._last_added_observation = observations[-1]
        episode._last_added_infos = infos[-1]
        episode._last_step_time = self.times[b - 1]
        if episode._start_time is None:
            episode._start_time = self.times[a]


def _copy(values: Any) -> Any:
    """A copy of one step's per-sub-environment values (an array or a sequence)."""
    return values.copy() if isinstance(values, np.ndarray) else list(values)


def _extend(buffer: InfiniteLookbackBuffer, items: list) -> None:
    if buffer.finalized:
        buffer.extend(items)
    else:
        buffer.data.extend(items)


class RoundRestartEnvRunner(LeanEnvRunner):
    """``restart_episodes(seed)`` makes the next ``sample()`` reset every sub-environment
    with ``seed`` (RLlib's own initial-reset path), dropping the episodes in progress."""

    def restart_episodes(self, seed: int) -> None:
        self._seed = int(seed)
        self._needs_initial_reset = True
