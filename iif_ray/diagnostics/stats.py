"""Statistics of the diagnostics: rank correlation, kNN-graph roughness, Monte-Carlo advantages.

Kept free of plotting and Ray so each can be checked against an independent computation.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho: Pearson correlation of average ranks (ties share their mean rank)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3:
        return math.nan
    rx = pd.Series(x[ok]).rank(method="average").to_numpy()
    ry = pd.Series(y[ok]).rank(method="average").to_numpy()
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def knn_edges(emb: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Undirected edges of the symmetrised k-nearest-neighbour graph with Gaussian weights.

    ``w_ij = exp(-|e_i - e_j|^2 / sigma^2)``, ``sigma^2`` the median squared distance over
    the kNN edges (the median heuristic; 1 when all those distances are 0).
    Returns ``(i, j, w)`` with ``i < j``, each edge once.
    """
    emb = np.asarray(emb, dtype=np.float64).reshape(len(emb), -1)
    n = len(emb)
    if n < 2:
        return np.zeros(0, int), np.zeros(0, int), np.zeros(0)
    k = min(k, n - 1)
    sq = np.sum(emb**2, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * emb @ emb.T, 0.0)
    np.fill_diagonal(d2, np.inf)
    nbrs = np.argsort(d2, axis=1, kind="stable")[:, :k]
    i = np.repeat(np.arange(n), k)
    j = nbrs.ravel()
    pairs = np.unique(np.stack([np.minimum(i, j), np.maximum(i, j)], axis=1), axis=0)
    dist2 = d2[pairs[:, 0], pairs[:, 1]]
    sigma2 = float(np.median(dist2))
    if sigma2 <= 0:
        sigma2 = 1.0
    return pairs[:, 0], pairs[:, 1], np.exp(-dist2 / sigma2)


def roughness(values: np.ndarray, emb: np.ndarray, k: int = 20) -> float:
    """Normalised Dirichlet energy of ``values / max|values|`` on the kNN graph of ``emb``:
    ``sum_ij w_ij (v_i - v_j)^2 / sum_ij w_ij`` (paper §4.2; high = influence jumps between
    similar states, low = it varies smoothly)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2 or not np.any(values):
        return math.nan
    v = values / np.max(np.abs(values))
    i, j, w = knn_edges(emb, k)
    if w.sum() == 0:
        return math.nan
    return float(np.sum(w * (v[i] - v[j]) ** 2) / np.sum(w))


def returns_to_go(frame: pd.DataFrame, gamma: float) -> np.ndarray:
    """Discounted return from each record to the end of its episode chunk in the buffer."""
    out = np.zeros(len(frame))
    order = frame.sort_values(["episode_id", "t"]).index
    sorted_frame = frame.loc[order]
    pos = {idx: p for p, idx in enumerate(frame.index)}
    for _, ep in sorted_frame.groupby("episode_id", sort=False):
        g = 0.0
        for idx, r in zip(ep.index[::-1], ep["reward"].to_numpy()[::-1], strict=True):
            g = float(r) + gamma * g
            out[pos[idx]] = g
    return out


def mc_advantages(frame: pd.DataFrame, gamma: float, min_visits: int = 2) -> np.ndarray:
    """Monte-Carlo advantages from repeat visits inside one round's buffer.

    ``A_mc(s, a) = mean G over visits of (s, a) - mean G over visits of s``, with G the
    discounted return-to-go. Needs a discrete ``state`` column. Episodes that started in an
    earlier round (first ``t > 0``) and the buffer's last, unfinished episode are left out;
    (s, a) pairs seen fewer than ``min_visits`` times get NaN.
    """
    frame = frame.copy()
    first_t = frame.groupby("episode_id")["t"].transform("min")
    last_ep = frame.loc[frame.index.max(), "episode_id"] if len(frame) else None
    usable = (first_t == 0) & (frame["episode_id"] != last_ep)
    frame["G"] = returns_to_go(frame, gamma)
    out = np.full(len(frame), np.nan)
    use = frame[usable]
    if use.empty:
        return out
    q = use.groupby(["state", "action"])["G"].agg(["mean", "count"])
    v = use.groupby("state")["G"].mean()
    keys = list(zip(frame["state"], frame["action"], strict=True))
    for n, (key, ok) in enumerate(zip(keys, usable.to_numpy(), strict=True)):
        if ok and key in q.index and q.loc[key, "count"] >= min_visits:
            out[n] = q.loc[key, "mean"] - v.loc[key[0]]
    return out
