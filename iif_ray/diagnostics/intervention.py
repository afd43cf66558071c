"""Targeted intervention: retrain one round without chosen records and measure the effect.

For each seed, PPO runs (scoring every record, dropping none) up to round k. Round k's
buffer is sampled once; from the same snapshot of the learner (weights, optimizer, RNGs) the
round is then trained three ways on that very buffer: (a) unfiltered, (b) without the records
with negative influence on the return, (c) without as many records drawn at random. Each
updated policy is evaluated on the same seeded episodes; the report is the change in return
of (b) and (c) against (a). The paper (§4.3, Fig. 5) finds (b) mostly positive and (c) mostly
negative.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from iif_ray.diagnostics.ledgers import pyplot
from iif_ray.presets import Preset, build_config


def evaluate(module, preset: Preset, episodes: int, seed: int) -> float:
    """Mean return of the stochastic policy over ``episodes`` seeded episodes."""
    from ray.rllib.core.columns import Columns

    from iif_ray.envs import make_env

    env = make_env(preset.env_id, {"kwargs": preset.env_kwargs})
    dist_cls = module.get_exploration_action_dist_cls()
    torch.manual_seed(seed)
    total = 0.0
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed * 100_003 + ep)
        done = False
        while not done:
            with torch.no_grad():
                x = torch.as_tensor(np.asarray(obs, dtype=np.float32))[None]
                logits = module.forward_inference({Columns.OBS: x})[Columns.ACTION_DIST_INPUTS]
                action = dist_cls.from_logits(logits).sample()[0].numpy()
            if action.ndim == 0:  # discrete: a plain int, as gymnasium's toy envs want
                action = int(action)
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
    env.close()
    return total / episodes


def intervene(summary: dict, rounds: list[int], seeds: list[int], episodes: int,
              echo: Callable[[str], None] = print) -> pd.DataFrame:
    """One row per (seed, round, variant) with the evaluated return and the change vs (a)."""
    preset = Preset(**summary["preset_settings"])
    target = summary["attribution"].get("target", "return")
    if target != "return":
        raise ValueError(f"intervention measures the return; the run's target is {target!r}")
    last = max(rounds)
    rows = []
    for seed in seeds:
        config = build_config(preset, algo="iif", seed=seed,
                              attribution={"mode": "score", "ledger_dir": None,
                                           "num_scorers": 0})
        algo = config.build_algo()
        try:
            learner = algo.learner_group._learner
            steps = 0
            for k in range(1, last + 1):
                if k in rounds:
                    rows += _one_round(algo, learner, preset, k, seed, steps, episodes)
                    r = rows[-3:]
                    echo(f"seed {seed} round {k}: unfiltered {r[0]['return']:.3f}, "
                         f"delta influence {r[1]['delta']:+.3f}, random {r[2]['delta']:+.3f} "
                         f"({r[1]['dropped']} records dropped)")
                result = algo.train()  # the round itself, unfiltered, to reach round k + 1
                steps = int(result.get("num_env_steps_sampled_lifetime", steps))
        finally:
            algo.stop()
    return pd.DataFrame(rows)


def _one_round(algo, learner, preset: Preset, k: int, seed: int, steps: int,
               episodes: int) -> list[dict]:
    batch = algo.env_runner.sample(num_timesteps=preset.steps_per_round, random_actions=False)
    snapshot = learner.get_state()
    update = {"timesteps": {"num_env_steps_sampled_lifetime": steps + preset.steps_per_round},
              "num_epochs": preset.num_epochs, "minibatch_size": preset.minibatch_size,
              "shuffle_batch_per_epoch": True}
    module_id = "default_policy"
    eval_seed = 10_000 * seed + k
    out = []
    learner.update(episodes=copy.deepcopy(batch), **update)
    scores = learner.last_scores.copy()
    base = evaluate(learner.module[module_id], preset, episodes, eval_seed)
    out.append({"seed": seed, "round": k, "variant": "unfiltered", "return": base,
                "dropped": 0, "delta": 0.0})
    harmful = scores < 0
    rng = np.random.default_rng([seed, k])
    random_drop = np.zeros(len(scores), dtype=bool)
    random_drop[rng.choice(len(scores), int(harmful.sum()), replace=False)] = True
    for variant, drop in (("influence", harmful), ("random", random_drop)):
        learner.set_state(copy.deepcopy(snapshot))
        learner.forced_keep = ~drop
        learner.update(episodes=copy.deepcopy(batch), **update)
        ret = evaluate(learner.module[module_id], preset, episodes, eval_seed)
        out.append({"seed": seed, "round": k, "variant": variant, "return": ret,
                    "dropped": int(drop.sum()), "delta": ret - base})
    # Continue the run from the unfiltered update, as plain PPO would.
    learner.set_state(copy.deepcopy(snapshot))
    return out


def plot_intervention(df: pd.DataFrame, path: Path) -> None:
    plt = pyplot()
    deltas = [df.loc[df["variant"] == v, "delta"].to_numpy() for v in ("influence", "random")]
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    labels = ["without harmful\n(influence < 0)", "without random\n(same count)"]
    ax.boxplot(deltas, tick_labels=labels)
    ax.axhline(0, color="gray", lw=0.5)
    n_rounds, n_seeds = df["round"].nunique(), df["seed"].nunique()
    ax.set(ylabel="change in return vs unfiltered",
           title=f"{n_rounds} round(s) x {n_seeds} seed(s)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
