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

from iif_ray.benchmark import EVAL_EPISODES
from iif_ray.envs import make_env
from iif_ray.presets import Preset, get_preset

SB3_ALGO = "sb3-ppo"


def _require_sb3():
    try:
        import stable_baselines3
    except ImportError:
        raise RuntimeError(
            "Stable-Baselines3 is not installed; pip install -e '.[bench]'") from None
    return stable_baselines3


def make_sb3(preset: Preset, seed: int, num_envs: int = 1):
    """An SB3 PPO model configured like the preset (MLP presets only).

    ``num_envs > 1`` samples from that many environments, ``steps_per_round / num_envs`` steps
    each, as our PPO does with ``num_envs_per_env_runner``.
    """
    _require_sb3()
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

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
    return PPO(
        "MlpPolicy", env, n_steps=preset.steps_per_round // num_envs,
        batch_size=preset.minibatch_size,
        n_epochs=preset.num_epochs, learning_rate=preset.lr, gamma=preset.gamma,
        gae_lambda=preset.lambda_, clip_range=preset.clip_param, ent_coef=preset.entropy_coeff,
        vf_coef=preset.vf_loss_coeff, max_grad_norm=math.inf, policy_kwargs=policy_kwargs,
        seed=seed, device="cpu", verbose=0,
    )


def sb3_round(model, steps: int) -> float:
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
        tune.report({"bench": {
            "env_steps": steps, "eval_return": float(mean), "eval_episodes": episodes,
            "train_return": math.nan, "frac_dropped": 0.0, "scoring_s": 0.0, "filter_s": 0.0,
            "update_s": math.nan, "sampling_s": math.nan, "eval_s": eval_s, "train_s": train_s,
        }})


def bench_speed(presets: list[str], rounds: int = 4, num_envs_options: tuple[int, ...] = (1, 8),
                echo=print) -> dict[str, float]:
    """Seconds per PPO round, ours vs SB3, measured alternately in one process.

    Our PPO runs through the identical IIF code path with filtering off. The first round of
    each is warm-up and excluded. With ``num_envs > 1`` both sides vectorise sampling the same
    way (``num_envs`` environments, ``2048 / num_envs`` steps each per round).
    """
    import statistics

    import torch

    from iif_ray.presets import build_config

    _require_sb3()
    torch.set_num_threads(1)
    ratios: dict[str, float] = {}
    for name in presets:
        preset = get_preset(name)
        per_layout: dict[int, tuple[float, float]] = {}
        for num_envs in num_envs_options:
            algo = build_config(preset, algo="ppo", num_envs=num_envs).build_algo()
            model = make_sb3(preset, 0, num_envs)
            ours, theirs = [], []
            try:
                for _ in range(rounds):
                    t0 = time.perf_counter()
                    algo.train()
                    ours.append(time.perf_counter() - t0)
                    theirs.append(sb3_round(model, preset.steps_per_round))
            finally:
                algo.stop()
            o, t = statistics.mean(ours[1:]), statistics.mean(theirs[1:])
            key = f"{name}/envs={num_envs}"
            ratios[key] = o / t
            per_layout[num_envs] = (o, t)
            echo(f"{key}: ours {o:.2f} s/round, SB3 {t:.2f} s/round "
                 f"(rounds 2..{rounds}), ratio ours/SB3 {o / t:.2f}")
        if 1 in per_layout and len(per_layout) > 1:
            # What a user gets: our fastest layout against SB3 as the paper runs it.
            best = min(per_layout, key=lambda n: per_layout[n][0])
            key = f"{name}/ours-envs={best}-vs-sb3-envs=1"
            ratios[key] = per_layout[best][0] / per_layout[1][1]
            echo(f"{key}: ours {per_layout[best][0]:.2f} s/round vs SB3 with one env "
                 f"{per_layout[1][1]:.2f} s/round, ratio {ratios[key]:.2f}")
    return ratios
