"""Targeted intervention: retrain one round without chosen records and measure the effect.

For each seed, PPO runs (scoring every record against the run's target, dropping none) up to
round k. Round k's buffer is sampled once; from the same snapshot of the learner (weights,
optimiser, RNGs) the round is then trained three ways on that very buffer, each with the same
minibatch shuffling seed: (a) unfiltered, (b) without every record with negative influence on
the target, (c) without as many records drawn at random. Each updated policy is measured the
same way (return target: mean return over the same seeded stochastic episodes; action target:
the probe action's probability at the probe states) and (b), (c) are reported as the change
against (a). The paper (§4.3, Fig. 5) finds (b) mostly positive and (c) mostly negative.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from iif_ray.diagnostics.learner import with_diagnostic_learner
from iif_ray.diagnostics.ledgers import pyplot
from iif_ray.envs import make_env
from iif_ray.presets import Preset
from iif_ray.rllib import build_config
from iif_ray.rllib.results import DEFAULT_MODULE

VARIANTS = ("unfiltered", "influence", "random")
MODULE_ID = DEFAULT_MODULE


def evaluate(module, preset: Preset, episodes: int, seed: int) -> float:
    """Mean return of the stochastic policy over ``episodes`` seeded episodes.

    Episode ``e`` always starts from env seed ``(seed, e)`` and the action sampling from
    torch seed ``seed``, so policies are compared on common random numbers.
    """
    from ray.rllib.core.columns import Columns

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


def metric_name(target: str) -> str:
    return "return" if target == "return" else "probe_probability"


def intervene(summary: dict, rounds: list[int], seeds: list[int], episodes: int,
              echo: Callable[[str], None] = print) -> pd.DataFrame:
    """One row per (seed, round, variant): the measured value and its change vs (a)."""
    preset = Preset(**summary["preset_settings"])
    settings = summary.get("attribution", {})
    target = settings.get("target", "return")
    attribution = {"mode": "score", "ledger_dir": None, "num_scorers": 0, "target": target,
                   "target_options": dict(settings.get("target_options") or {})}
    last = max(rounds)
    total = len(seeds) * len(rounds)
    rows: list[dict] = []
    t0 = time.perf_counter()
    for seed in seeds:
        algo = with_diagnostic_learner(
            build_config(preset, algo="iif", seed=seed, attribution=attribution)).build_algo()
        try:
            learner = algo.learner_group._learner
            steps = 0
            for k in range(1, last + 1):
                if k in rounds:
                    new = _one_round(algo, learner, preset, target, k, seed, steps, episodes)
                    rows += new
                    done = len(rows) // len(VARIANTS)
                    echo(f"[{done}/{total}] seed {seed} round {k}: {metric_name(target)} "
                         f"{new[0]['value']:.3f}, without harmful {new[1]['delta']:+.3f}, "
                         f"without random {new[2]['delta']:+.3f} ({new[1]['dropped']}/"
                         f"{new[0]['records']} dropped, {time.perf_counter() - t0:.0f} s)")
                result = algo.train()  # round k itself, unfiltered, to reach round k + 1
                steps = int(result.get("num_env_steps_sampled_lifetime", steps))
        finally:
            algo.stop()
    return pd.DataFrame(rows)


def _one_round(algo, learner, preset: Preset, target: str, k: int, seed: int, steps: int,
               episodes: int) -> list[dict]:
    """Round k three ways on one buffer, from one learner snapshot; the learner is left at
    the snapshot afterwards, so the run goes on as plain PPO."""
    batch = algo.env_runner.sample(num_timesteps=preset.steps_per_round, random_actions=False)
    snapshot = copy.deepcopy(learner.get_state())
    update = {"timesteps": {"num_env_steps_sampled_lifetime": steps + preset.steps_per_round},
              "num_epochs": preset.num_epochs, "minibatch_size": preset.minibatch_size,
              "shuffle_batch_per_epoch": True}
    update_seed = 1_000_003 * seed + k
    eval_seed = 10_000 * seed + k

    def train_and_measure(keep: np.ndarray | None) -> float:
        learner.set_state(copy.deepcopy(snapshot))
        learner.forced_keep = keep
        np.random.seed(update_seed)  # RLlib shuffles minibatches with numpy's global RNG
        torch.manual_seed(update_seed)
        learner.update(episodes=copy.deepcopy(batch), **update)
        if target == "return":
            return evaluate(learner.module[MODULE_ID], preset, episodes, eval_seed)
        return math.exp(learner.target_value(MODULE_ID))

    base = train_and_measure(None)
    scores = learner.last_scores.copy()
    n = len(scores)
    harmful = scores < 0
    rng = np.random.default_rng([seed, k])
    random_drop = np.zeros(n, dtype=bool)
    random_drop[rng.choice(n, int(harmful.sum()), replace=False)] = True
    row = {"seed": seed, "round": k, "metric": metric_name(target), "records": n,
           "episodes": episodes if target == "return" else 0}
    out = [{**row, "variant": "unfiltered", "value": base, "dropped": 0, "delta": 0.0}]
    for variant, drop in (("influence", harmful), ("random", random_drop)):
        value = train_and_measure(~drop)
        out.append({**row, "variant": variant, "value": value, "dropped": int(drop.sum()),
                    "delta": value - base})
    learner.set_state(copy.deepcopy(snapshot))
    return out


def summarise(df: pd.DataFrame) -> tuple[pd.DataFrame, tuple[float, float]]:
    """Per removal: median and mean change, share of (seed, round) pairs with a gain; and
    the shares of pairs where removing harmful records did better than / as well as
    removing random ones."""
    rows = []
    paired = df.pivot_table(index=["seed", "round"], columns="variant", values="delta")
    for variant in ("influence", "random"):
        d = df.loc[df["variant"] == variant, "delta"]
        rows.append({"variant": variant, "n": len(d), "median_delta": float(d.median()),
                     "mean_delta": float(d.mean()), "share_positive": float((d > 0).mean()),
                     "share_negative": float((d < 0).mean())})
    better = float((paired["influence"] > paired["random"]).mean())
    tie = float((paired["influence"] == paired["random"]).mean())
    return pd.DataFrame(rows), (better, tie)


def plot_intervention(df: pd.DataFrame, path: Path, metric: str = "return") -> None:
    plt = pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.8),
                                  gridspec_kw={"width_ratios": [1, 2]})
    deltas = [df.loc[df["variant"] == v, "delta"].to_numpy() for v in ("influence", "random")]
    ax.boxplot(deltas, tick_labels=["without harmful\n(influence < 0)",
                                    "without random\n(same count)"])
    ax.axhline(0, color="gray", lw=0.5)
    n_rounds, n_seeds = df["round"].nunique(), df["seed"].nunique()
    ax.set(ylabel=f"change in {metric.replace('_', ' ')} vs unfiltered",
           title=f"{n_rounds} round(s) x {n_seeds} seed(s)")
    rounds = sorted(df["round"].unique().tolist())
    for off, variant, colour in ((-0.18, "influence", "tab:blue"), (0.18, "random", "tab:orange")):
        data = [df.loc[(df["variant"] == variant) & (df["round"] == r), "delta"].to_numpy()
                for r in rounds]
        bp = ax2.boxplot(data, positions=np.arange(len(rounds)) + off, widths=0.3,
                         patch_artist=True, manage_ticks=False)
        for box in bp["boxes"]:
            box.set(facecolor=colour, alpha=0.6)
        ax2.plot([], [], color=colour, lw=6, alpha=0.6,
                 label="without harmful" if variant == "influence" else "without random")
    ax2.axhline(0, color="gray", lw=0.5)
    ax2.set_xticks(np.arange(len(rounds)), [str(r) for r in rounds])
    ax2.set(xlabel="round k", title="per round, over seeds")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
