"""A run directory's ledger and settings as pandas, with readable state and action labels."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from iif_ray.ledger import read_ledger, read_ledger_obs
from iif_ray.rllib.run_files import static_summary
from iif_ray.run import ledger_dir, read_summary_or_spec

# FrozenLake's action meanings (gymnasium's toy_text/frozen_lake.py).
FROZENLAKE_MOVES = {0: "left", 1: "down", 2: "right", 3: "up"}


def load_run(run_dir: str | Path) -> tuple[dict, pd.DataFrame, np.ndarray | None]:
    """``(summary, ledger frame, observations or None)`` of a completed run.

    Rows stay in buffer order within each round (the order the learner wrote them), which
    the return-to-go computation relies on only through ``(episode_id, t)``.
    """
    summary = read_summary_or_spec(run_dir, static_summary)
    ledger = ledger_dir(run_dir)
    if not ledger.is_dir() or not any(ledger.iterdir()):
        raise FileNotFoundError(f"{str(run_dir)!r} has no ledger/; train with iif or score mode")
    table, obs = read_ledger_obs(read_ledger(str(ledger)))
    frame = table.to_pandas()
    order = np.argsort(frame["iteration"].to_numpy(), kind="stable")
    frame = frame.iloc[order].reset_index(drop=True)
    if obs is not None:
        obs = obs[order]
    if frame["score"].isna().all():
        raise ValueError(f"{str(run_dir)!r} has no influence scores (trained with algo=ppo); "
                         "diagnose a run trained with --algo iif or --mode score")
    return summary, frame, obs


def pyplot():
    """matplotlib's pyplot on the file-only backend (no display on servers and in jobs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def discrete_states(obs: np.ndarray | None) -> np.ndarray | None:
    """State indices when observations are one-hot (FrozenLake), else None."""
    if obs is None:
        return None
    flat = obs.reshape(len(obs), -1)
    if flat.shape[1] > 4096 or not np.all((flat == 0) | (flat == 1)):
        return None
    if not np.all(flat.sum(axis=1) == 1):
        return None
    return flat.argmax(axis=1)


def grid_side(obs: np.ndarray | None) -> int | None:
    """Side of a square grid world whose one-hot states these are (4 for FrozenLake 4x4)."""
    if obs is None or discrete_states(obs) is None:
        return None
    n = obs.reshape(len(obs), -1).shape[1]
    side = math.isqrt(n)
    return side if side * side == n else None


def state_summaries(obs: np.ndarray | None) -> list[str]:
    """One short, readable string per record: the grid cell for one-hot states, else the
    first observation values."""
    if obs is None:
        return []
    states = discrete_states(obs)
    if states is not None:
        side = grid_side(obs)
        if side:
            return [f"s{s} (row {s // side}, col {s % side})" for s in states]
        return [f"s{s}" for s in states]
    flat = obs.reshape(len(obs), -1)
    return ["[" + ", ".join(f"{v:.2f}" for v in row[:4]) + (", ...]" if len(row) > 4 else "]")
            for row in flat]


def action_labels(actions: np.ndarray, env_id: str) -> list[str]:
    """``"2 (right)"`` for FrozenLake, the plain action elsewhere."""
    names = FROZENLAKE_MOVES if env_id.startswith("FrozenLake") else {}
    out = []
    for a in actions:
        a = a.item() if hasattr(a, "item") and np.ndim(a) == 0 else a
        out.append(f"{a} ({names[a]})" if a in names else str(a))
    return out


def frozenlake_map(summary: dict) -> list[str] | None:
    """The run's FrozenLake map rows (``"SFFF"``, ...), or None for other environments."""
    if not str(summary.get("env", "")).startswith("FrozenLake"):
        return None
    try:
        import gymnasium as gym

        kwargs = dict(summary.get("preset_settings", {}).get("env_kwargs") or {})
        env = gym.make(summary["env"], **kwargs)
        desc = env.unwrapped.desc
        env.close()
    except Exception:  # a map we cannot rebuild only costs the picture its background
        return None
    return [b"".join(row).decode() for row in desc]


def show_rounds(rounds: list[int], n: int = 3) -> list[int]:
    """Rounds to picture: the paper's (2, 5, 10) where the run has them, else spread out."""
    paper = [k for k in (2, 5, 10) if k in rounds]
    if len(paper) >= min(2, len(rounds)):
        return paper
    idx = np.unique(np.linspace(0, len(rounds) - 1, min(n, len(rounds))).round().astype(int))
    return [rounds[i] for i in idx]
