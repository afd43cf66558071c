"""An EnvRunner that can start every round from fresh, re-seeded episodes.

The paper's official IIF pipeline runs every round as a new process: the policy is loaded,
the environment is created and seeded again, and 2048 steps are collected from fresh
episodes; the episode cut at the end of the previous round is never continued. Its PPO
baseline, like RLlib, samples continuously. ``IIFConfig.protocol(restart_per_round=True)``
reproduces the per-round restart with this runner, so the two protocols can be compared
with everything else equal.
"""

from __future__ import annotations

import numpy as np
from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner


def round_seed(seed: int | None, round_index: int, runner_index: int = 0) -> int:
    """A distinct environment seed per (training seed, round, runner), stable across resumes."""
    seq = np.random.SeedSequence([int(seed or 0), int(round_index), int(runner_index)])
    return int(seq.generate_state(1)[0])


class RoundRestartEnvRunner(SingleAgentEnvRunner):
    """``restart_episodes(seed)`` makes the next ``sample()`` reset every sub-environment
    with ``seed`` (RLlib's own initial-reset path), dropping the episodes in progress."""

    def restart_episodes(self, seed: int) -> None:
        self._seed = int(seed)
        self._needs_initial_reset = True
