"""Stable-Baselines3 PPO with our presets' hyperparameters: the peer our PPO must not trail.

Optional dependency (``pip install -e .[bench]``). SB3 runs with the paper's settings: 2,048
steps per round from one environment, minibatch 64, 10 epochs, the preset's optimiser and
learning rate, clip 0.2, gamma 0.99, lambda 0.95, vf 0.5, entropy 0, separate 64-64 tanh
networks, and no gradient clipping (``max_grad_norm=inf``, as the paper's released code).
Both standardise advantages per minibatch (the presets' ``advantage_normalization``).
"""

from __future__ import annotations

import math
import time
from typing import Any

from iif_ray.envs import make_env
from iif_ray.experiments.results import ROUND_ROW_KEY
from iif_ray.experiments.trials import EVAL_EPISODES
from iif_ray.presets import Preset, get_preset
from iif_ray.reporting.rounds import round_row

SB3_ALGO = "sb3-ppo"


def require_sb3() -> Any:
    """The ``stable_baselines3`` module, or a clear error naming the install command."""
    try:
        import stable_baselines3
    except ImportError:
        raise RuntimeError(
            "Stable-Baselines3 is not installed; pip install -e '.[bench]'") from None
    return stable_baselines3


def make_sb3(preset: Preset, seed: int, num_envs: int = 1) -> Any:
    """An SB3 PPO model configured like the preset (MLP presets only).

    ``num_envs > 1`` samples from that many environments, ``steps_per_round / num_envs`` steps
    each, as our PPO does with ``num_envs_per_env_runner``. The model logs nowhere: training
    writes no file.
    """
    require_sb3()
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.logger import Logger

    if "conv_filters" in preset.model:
        raise ValueError(f"preset {preset.name!r} uses a CNN; the SB3 baseline covers MLP presets")
    optimizer = torch.optim.SGD if preset.optimizer == "sgd" else torch.optim.Adam
    policy_kwargs: dict[str, Any] = {
        "net_arch": {"pi": list(preset.model["fcnet_hiddens"]),
                     "vf": list(preset.model["fcnet_hiddens"])},
        "activation_fn": torch.nn.Tanh,
        "optimizer_class": optimizer,
    }
    if optimizer is torch.optim.SGD:
        policy_kwargs["optimizer_kwargs"] = {}
    env = make_vec_env(lambda: make_env(preset.env_id, {"kwargs": preset.env_kwargs}),
                       n_envs=num_envs, seed=seed)
    model = PPO(
        "MlpPolicy", env, n_steps=preset.steps_per_round // num_envs,
        batch_size=preset.minibatch_size,
        n_epochs=preset.num_epochs, learning_rate=preset.lr, gamma=preset.gamma,
        gae_lambda=preset.lambda_, clip_range=preset.clip_param, ent_coef=preset.entropy_coeff,
        vf_coef=preset.vf_loss_coeff, max_grad_norm=math.inf, policy_kwargs=policy_kwargs,
        seed=seed, device="cpu", verbose=0,
    )
    # Without a logger of its own, every learn() configures SB3's default one, which creates
    # a folder SB3-<date> in the system temp directory. This one keeps its figures in memory.
    model.set_logger(Logger(folder=None, output_formats=[]))
    return model


def sb3_round(model: Any, steps: int) -> float:
    """Train ``model`` for ``steps`` env steps (one round); return the seconds it took."""
    t0 = time.perf_counter()
    model.learn(steps, reset_num_timesteps=False, progress_bar=False)
    return time.perf_counter() - t0


def sb3_trainable(config: dict) -> None:
    """Tune function trainable: one SB3 run, reporting the same ``bench`` record per round."""
    import torch
    from ray import tune
    from stable_baselines3.common.evaluation import evaluate_policy

    torch.set_num_threads(1)
    preset = get_preset(config["preset"])
    rounds = int(config["rounds"])
    episodes = int(config.get("eval_episodes") or EVAL_EPISODES.get(preset.name, 10))
    model = make_sb3(preset, int(config["seed"]))
    eval_env = make_env(preset.env_id, {"kwargs": preset.env_kwargs})
    eval_env.reset(seed=10_000 + int(config["seed"]))
    steps = 0
    for _ in range(rounds):
        train_s = sb3_round(model, preset.steps_per_round)
        steps += preset.steps_per_round
        t0 = time.perf_counter()
        mean, _ = evaluate_policy(model, eval_env, n_eval_episodes=episodes, deterministic=False)
        eval_s = time.perf_counter() - t0
        tune.report({ROUND_ROW_KEY: round_row(
            env_steps=steps, eval_return=float(mean), eval_episodes=episodes,
            train_return=math.nan, frac_dropped=0.0, scoring_s=0.0, filter_s=0.0,
            update_s=math.nan, sampling_s=math.nan, eval_s=eval_s, train_s=train_s,
        )})
