"""A run directory's ledger and settings as pandas, with readable state summaries."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from iif_ray.ledger import read_ledger


def load_run(run_dir: str | Path) -> tuple[dict, pd.DataFrame, np.ndarray | None]:
    """``(summary, ledger frame, observations or None)`` of a completed run."""
    run_dir = Path(run_dir)
    summary_path = run_dir / "summary.json"
    if not summary_path.exists():
        raise FileNotFoundError(f"{str(run_dir)!r} is not a completed run (no summary.json)")
    summary = json.loads(summary_path.read_text())
    ledger_dir = run_dir / "ledger"
    if not ledger_dir.is_dir() or not any(ledger_dir.iterdir()):
        raise FileNotFoundError(f"{str(run_dir)!r} has no ledger/; train with iif or score mode")
    table = read_ledger(str(ledger_dir))
    obs = None
    if "obs" in table.column_names:
        meta = table.schema.metadata or {}
        shape = tuple(int(s) for s in meta.get(b"obs_shape", b"").decode().split(",") if s)
        flat = np.stack(table.column("obs").to_numpy(zero_copy_only=False))
        obs = flat.reshape((len(flat), *shape)) if shape else flat
        table = table.drop(["obs"])
    frame = table.to_pandas()
    # Keep the ledger's own row order within a round (it is the buffer order).
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


def state_summaries(obs: np.ndarray | None) -> list[str]:
    """One short, readable string per record: the grid cell for one-hot states, else the
    first observation values."""
    if obs is None:
        return []
    states = discrete_states(obs)
    if states is not None:
        side = math.isqrt(obs.reshape(len(obs), -1).shape[1])
        if side * side == obs.reshape(len(obs), -1).shape[1]:
            return [f"s{s} (row {s // side}, col {s % side})" for s in states]
        return [f"s{s}" for s in states]
    flat = obs.reshape(len(obs), -1)
    return ["[" + ", ".join(f"{v:.2f}" for v in row[:4]) + (", ...]" if len(row) > 4 else "]")
            for row in flat]
