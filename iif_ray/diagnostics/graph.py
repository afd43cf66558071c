"""Roughness of influence over record embeddings: normalised Dirichlet energy on a kNN graph.

Paper §4.2: nodes are the positive-influence records of a round, node values
``I_i / max|I|``, edges join each record to its ``u`` nearest neighbours in embedding space
(symmetrised: an edge exists if either end lists the other), weighted
``w_ij = exp(-|e_i - e_j|^2 / sigma^2)`` with ``sigma`` from the median heuristic. Low energy
means similar states get similar influence (a behaviour has formed a "semantic cluster"),
high energy means influence jumps between neighbours.

Pure numpy, so it can be checked against a pair-by-pair computation.
"""

from __future__ import annotations

import math

import numpy as np

KNN = 20


def squared_distances(emb: np.ndarray) -> np.ndarray:
    """All pairwise squared Euclidean distances (``n x n``).

    Computed pair by pair (not as ``|a|^2 + |b|^2 - 2ab``), so repeated states are exactly
    0 apart and neighbour ties among them break by index, reproducibly.
    """
    from scipy.spatial.distance import cdist

    emb = np.asarray(emb, dtype=np.float64).reshape(len(emb), -1)
    return cdist(emb, emb, "sqeuclidean")


def median_sigma2(d2: np.ndarray) -> float:
    """Median heuristic: ``sigma^2`` = median squared distance over all distinct pairs.

    Repeated states (FrozenLake: 16 states, 2048 records) make many distances exactly 0; if
    that is the median, the median of the positive distances is used instead, and 1.0 when
    every record sits at the same point.
    """
    iu = np.triu_indices(len(d2), k=1)
    pairs = d2[iu]
    if pairs.size == 0:
        return 1.0
    s = float(np.median(pairs))
    if s <= 0:
        pos = pairs[pairs > 0]
        s = float(np.median(pos)) if pos.size else 1.0
    return s


def knn_edges(emb: np.ndarray, k: int = KNN) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edges ``(i, j, w)`` with ``i < j``, each once, of the symmetrised ``k``-NN graph.

    Neighbour ties are broken by index (stable sort), so the graph is deterministic.
    """
    n = len(emb)
    if n < 2:
        return np.zeros(0, int), np.zeros(0, int), np.zeros(0)
    k = min(k, n - 1)
    d2 = squared_distances(emb)
    sigma2 = median_sigma2(d2)
    masked = d2.copy()
    np.fill_diagonal(masked, np.inf)
    nbrs = np.argsort(masked, axis=1, kind="stable")[:, :k]
    i = np.repeat(np.arange(n), k)
    j = nbrs.ravel()
    pairs = np.unique(np.stack([np.minimum(i, j), np.maximum(i, j)], axis=1), axis=0)
    w = np.exp(-d2[pairs[:, 0], pairs[:, 1]] / sigma2)
    return pairs[:, 0], pairs[:, 1], w


def dirichlet_energy(values: np.ndarray, i: np.ndarray, j: np.ndarray, w: np.ndarray) -> float:
    """``sum_ij w_ij (v_i - v_j)^2 / sum_ij w_ij`` over the given edges."""
    values = np.asarray(values, dtype=np.float64)
    if w.sum() <= 0:
        return math.nan
    return float(np.sum(w * (values[i] - values[j]) ** 2) / np.sum(w))


def roughness(values: np.ndarray, emb: np.ndarray, k: int = KNN) -> float:
    """Normalised Dirichlet energy of ``values / max|values|`` on the ``k``-NN graph of ``emb``
    (NaN with fewer than two nodes or all-zero values)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2 or not np.any(values):
        return math.nan
    i, j, w = knn_edges(emb, k)
    return dirichlet_energy(values / np.max(np.abs(values)), i, j, w)
