"""The per-round restart protocol: every round starts from fresh episodes of a re-seeded env."""

from __future__ import annotations

import numpy as np
import pytest
from ray.rllib.callbacks.callbacks import RLlibCallback
from ray.rllib.utils.annotations import override

from iif_ray.envs import make_env
from iif_ray.presets import get_preset
from iif_ray.rllib import build_config
from iif_ray.rllib.env_runner import round_seed

EVENTS: list = []  # the local EnvRunner runs in this process (num_env_runners=0)


class RecordStarts(RLlibCallback):
    @override(RLlibCallback)
    def on_episode_start(self, *, episode, **kwargs) -> None:
        EVENTS.append(("start", np.asarray(episode.get_observations(0))))


def _run(restart: bool, rounds: int = 3) -> list[list[np.ndarray]]:
    """The start observations of the episodes begun in each round."""
    config = (build_config(get_preset("cartpole"), algo="ppo", seed=3)
              .training(train_batch_size=200, minibatch_size=50, num_epochs=1)
              .env_runners(rollout_fragment_length=200)
              .callbacks(RecordStarts)
              .protocol(restart_per_round=restart))
    algo = config.build_algo()
    per_round = []
    try:
        for _ in range(rounds):
            EVENTS.clear()
            algo.train()
            per_round.append([obs for kind, obs in EVENTS if kind == "start"])
    finally:
        algo.stop()
    return per_round


@pytest.mark.ray
@pytest.mark.slow
def test_restart_per_round_starts_each_round_from_its_seed(ray_local):
    env = make_env("CartPole-v1")
    restarted = _run(restart=True)
    for k, starts in enumerate(restarted):
        want, _ = env.reset(seed=round_seed(3, k, 0))
        np.testing.assert_allclose(starts[0], want, atol=1e-6)  # the round's first episode

    continuous = _run(restart=False)
    # Continuous sampling: round 2 begins inside an episode carried over from round 1, so
    # its first start is not a reset with that round's seed.
    later = [env.reset(seed=round_seed(3, k, 0))[0] for k in (1, 2)]
    assert not any(np.allclose(continuous[k][0], later[k - 1], atol=1e-6) for k in (1, 2))


def test_round_seeds_differ_and_are_stable():
    seeds = {round_seed(s, k, w) for s in range(3) for k in range(50) for w in range(2)}
    assert len(seeds) == 300
    assert round_seed(7, 12) == round_seed(7, 12)


def test_restart_needs_the_restarting_runner():
    config = build_config(get_preset("cartpole"), algo="ppo", seed=0)
    config.restart_per_round = True  # set without protocol(): the runner class is missing
    with pytest.raises(ValueError, match="restart_per_round needs env_runner_cls"):
        config.validate()
