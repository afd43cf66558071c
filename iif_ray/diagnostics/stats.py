"""Rank correlation and Monte-Carlo advantages from repeat visits.

Kept free of plotting and Ray so each can be checked against an independent computation.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho: Pearson correlation of average ranks (ties share their mean rank).

    Non-finite pairs are ignored; NaN with fewer than three pairs or a constant side.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3:
        return math.nan
    rx = pd.Series(x[ok]).rank(method="average").to_numpy()
    ry = pd.Series(y[ok]).rank(method="average").to_numpy()
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def returns_to_go(frame: pd.DataFrame, gamma: float) -> np.ndarray:
    """Discounted return from each record to the end of its episode chunk in the buffer
    (rewards ordered by ``t`` within each ``episode_id``), in ``frame``'s row order."""
    order = np.lexsort((frame["t"].to_numpy(), frame["episode_id"].to_numpy()))
    eps = frame["episode_id"].to_numpy()[order]
    rewards = frame["reward"].to_numpy(dtype=np.float64)[order]
    g_sorted = np.zeros(len(frame))
    g = 0.0
    for n in range(len(order) - 1, -1, -1):
        if n == len(order) - 1 or eps[n] != eps[n + 1]:
            g = 0.0
        g = rewards[n] + gamma * g
        g_sorted[n] = g
    out = np.empty(len(frame))
    out[order] = g_sorted
    return out


def base_episode_id(episode_id: str) -> str:
    """The episode an id belongs to across rounds: RLlib suffixes ``_<chunk>`` per batch."""
    head, sep, tail = str(episode_id).rpartition("_")
    return head if sep and tail.isdigit() else str(episode_id)


def mc_advantages(frame: pd.DataFrame, gamma: float, min_visits: int = 2,
                  unfinished: Iterable[str] | None = None) -> np.ndarray:
    """Monte-Carlo advantages from repeat visits inside one round's buffer.

    ``A_mc(s, a) = mean G over visits of (s, a) - mean G over all visits of s``, with G the
    discounted return-to-go inside the buffer. Needs a discrete ``state`` column.
    Episode chunks in ``unfinished`` (cut off at the end of the buffer; by default the
    buffer's last chunk) are left out, since their G is missing the episode's rest. Pairs
    ``(s, a)`` seen fewer than ``min_visits`` times get NaN.
    """
    frame = frame.reset_index(drop=True)
    if unfinished is None:
        unfinished = [frame["episode_id"].iloc[-1]] if len(frame) else []
    usable = ~frame["episode_id"].isin(set(unfinished)).to_numpy()
    g = pd.Series(returns_to_go(frame, gamma))
    use = pd.DataFrame({"state": frame["state"], "action": frame["action"], "G": g})[usable]
    out = np.full(len(frame), np.nan)
    if use.empty:
        return out
    q = use.groupby(["state", "action"])["G"].agg(["mean", "count"]).reset_index()
    v = use.groupby("state")["G"].mean().rename("v").reset_index()
    q = q.merge(v, on="state")
    q["a_mc"] = np.where(q["count"] >= min_visits, q["mean"] - q["v"], np.nan)
    keyed = frame[["state", "action"]].merge(q[["state", "action", "a_mc"]],
                                             on=["state", "action"], how="left")
    out[:] = keyed["a_mc"].to_numpy()
    out[~usable] = np.nan
    return out
