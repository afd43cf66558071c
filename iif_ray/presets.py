"""The paper's per-environment settings, as plain data (no RLlib here).

:func:`iif_ray.rllib.build_config` turns a :class:`Preset` into an RLlib config; keeping the
numbers apart from RLlib lets the CLI validate input and the report name budgets without
importing Ray.

The paper (Hu et al. 2025, App. A.2) trains Stable-Baselines3 PPO with 2048 steps per round
from one environment, minibatch 64, 10 epochs, SGD lr 5e-3 (Adam 3e-4 for BipedalWalker),
clip 0.2, gamma 0.99, GAE lambda 0.95, vf_coef 0.5, ent_coef 0 and separate 64-64 tanh MLPs.
RLlib's PPO defaults differ on almost every one of these (KL term, lambda 1.0, 30 epochs,
lr 5e-5, value-loss clipping), so each is set here explicitly.

Choices that are ours, not the paper's:

* No gradient clipping, following the official code (the paper's text says 0.5, the released
  trainer never clips, which keeps each update a plain SGD step as TracIn assumes).
* No value-loss clipping (SB3 does not clip the value loss by default).
* Training standardises advantages per minibatch, as SB3 does; scoring uses the advantages
  standardised once per round over the real records (minibatches are drawn after the filter).
* RLlib's action normalisation is on only for continuous action spaces (for discrete ones it
  changes nothing and costs sampling time).
* CartPole-v1 and Hopper-v5 are not in the paper; they use the same recipe (Hopper with Adam
  3e-4 and the locomotion drop fraction of BipedalWalker).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from iif_ray.envs import CNN_IMAGE, check_env_id, check_observation_space, spaces

ALGOS = ("iif", "ppo", "random", "advantage")
BENCHMARK_ALGOS = ("ppo", "iif", "random")  # what a benchmark sweep compares by default

_MLP = {
    "fcnet_hiddens": [64, 64],
    "fcnet_activation": "tanh",
    "vf_share_layers": False,
    "fcnet_kernel_initializer": "orthogonal_",
    "fcnet_kernel_initializer_kwargs": {"gain": math.sqrt(2.0)},
    "fcnet_bias_initializer": "zeros_",
}
_GAUSSIAN = {**_MLP, "free_log_std": True}
_MINIGRID_CNN = {
    # SB3 CnnPolicy as in the paper's code: 16 and 32 filters of 3x3 without padding
    # (7x7 -> 5x5 -> 3x3), a trunk shared by actor and critic, then 64-64 heads.
    "conv_filters": [[16, [3, 3], 1, "valid"], [32, [3, 3], 1, "valid"]],
    "conv_activation": "relu",
    "head_fcnet_hiddens": [64, 64],
    "head_fcnet_activation": "tanh",
    "vf_share_layers": True,
}


@dataclass(frozen=True)
class Preset:
    name: str
    env_id: str
    timesteps: int  # the paper's budget
    drop_fraction: float  # the paper's p
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    optimizer: str = "sgd"
    lr: float = 5e-3
    # Per-minibatch standardisation of advantages, as SB3 (the paper's base) does.
    advantage_normalization: str = "minibatch"
    model: dict[str, Any] = field(default_factory=lambda: dict(_MLP))
    steps_per_round: int = 2048
    minibatch_size: int = 64
    num_epochs: int = 10
    gamma: float = 0.99
    lambda_: float = 0.95
    clip_param: float = 0.2
    vf_loss_coeff: float = 0.5
    entropy_coeff: float = 0.0
    eval_episodes: int = 1000  # the paper's stochastic evaluation count
    in_paper: bool = True
    # Episode returns from "nothing learned" to "solved": it scales the evaluation precision
    # target (standard error <= 2% of the range) and normalises scores across environments.
    return_range: tuple[float, float] | None = None

    @property
    def rounds(self) -> int:
        return math.ceil(self.timesteps / self.steps_per_round)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("frozenlake", "FrozenLake-v1", 102_400, 0.5,
               env_kwargs={"map_name": "4x4", "is_slippery": False}, return_range=(0.0, 1.0)),
        # Acrobot: -500 is a policy that never swings up within the 500-step limit.
        Preset("acrobot", "Acrobot-v1", 102_400, 0.5, return_range=(-500.0, 0.0)),
        Preset("minigrid", "MiniGrid-Empty-8x8-v0", 81_920, 0.125, model=dict(_MINIGRID_CNN),
               return_range=(0.0, 1.0)),
        Preset("highway", "highway-v0", 204_800, 0.5, eval_episodes=100,
               env_kwargs={"config": {"observation": {"type": "Kinematics"},
                                      "action": {"type": "DiscreteMetaAction"},
                                      "vehicles_count": 10}}),
        # LunarLander: a uniform-random policy scores about -180; 200 is "solved".
        Preset("lunarlander", "LunarLander-v3", 307_200, 0.125, return_range=(-200.0, 200.0)),
        Preset("bipedalwalker", "BipedalWalker-v3", 1_024_000, 0.0625, optimizer="adam",
               lr=3e-4, model=dict(_GAUSSIAN), eval_episodes=100),
        Preset("cartpole", "CartPole-v1", 102_400, 0.5, in_paper=False,
               return_range=(0.0, 500.0)),
        Preset("hopper", "Hopper-v5", 1_000_000, 0.0625, optimizer="adam", lr=3e-4,
               model=dict(_GAUSSIAN), eval_episodes=100, in_paper=False),
    )
}
# Gymnasium id -> preset, so `--env LunarLander-v3` picks up the paper's settings too.
PRESET_BY_ENV = {p.env_id: p for p in PRESETS.values()}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; available: {sorted(PRESETS)}") from None


def preset_for(preset: str | None = None, env: str | None = None) -> Preset:
    """The named preset, or the preset of a known env id, or the generic recipe for any env.

    The generic recipe gives 7x7 image observations (every MiniGrid/BabyAI agent view) the
    MiniGrid preset's CNN: RLlib has no default encoder for that shape.

    Raises:
        ValueError: an unknown preset or env id, neither given, a preset with an env id
            other than its own (which would train one env with another's settings), or an
            env whose observations no model here takes.
    """
    if preset is not None:
        p = get_preset(preset)
        if env is not None and check_env_id(env) != p.env_id:
            raise ValueError(f"--preset {preset} is the recipe for {p.env_id}, but --env is "
                             f"{env!r}; give one of them (accepted: --env {p.env_id} with it)")
        return p
    if env is None:
        raise ValueError("give an environment id or a preset name")
    env_id = check_env_id(env)
    if env_id in PRESET_BY_ENV:
        return PRESET_BY_ENV[env_id]
    observations = spaces(env_id)[0]
    check_observation_space(env_id, observations)
    model = dict(_MINIGRID_CNN) if observations.shape[:2] == CNN_IMAGE else dict(_MLP)
    return Preset(name=env_id, env_id=env_id, timesteps=100_000, drop_fraction=0.125,
                  model=model, in_paper=False)


def algo_settings(algo: str) -> dict[str, Any]:
    """Attribution settings that turn the shared learner into each compared algorithm.

    Besides :data:`ALGOS`, sweeps accept ``iif-p<fraction>`` (IIF with that drop fraction
    instead of the preset's) and ``iif-negative`` (drop every negative-score record).
    """
    if algo.startswith("iif-p"):
        try:
            p = float(algo.removeprefix("iif-p"))
        except ValueError:
            p = -1.0
        if not 0 < p < 1:
            raise ValueError(f"unknown algo {algo!r}: iif-p<fraction> needs a fraction in "
                             "(0, 1), e.g. iif-p0.25")
        return {"mode": "filter", "selection": "neg-bottom", "drop_fraction": p}
    if algo == "iif-negative":
        return {"mode": "filter", "selection": "negative"}
    if algo == "iif":
        return {"mode": "filter", "selection": "neg-bottom"}
    if algo == "ppo":
        return {"mode": "off"}
    if algo in ("random", "advantage"):
        return {"mode": "filter", "selection": algo}
    raise ValueError(f"unknown algo {algo!r}; accepted: {list(ALGOS)}, iif-p<fraction>, "
                     "iif-negative")

