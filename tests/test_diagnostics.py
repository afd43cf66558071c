"""Diagnostics: statistics against independent computations, then each analysis end to end."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from iif_ray.diagnostics.stats import knn_edges, mc_advantages, roughness, spearman


def test_spearman_matches_scipy_with_ties():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, 200).astype(float)  # many ties
    y = x + rng.normal(0, 2, 200)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert math.isnan(spearman([1.0, 2.0], [2.0, 1.0]))


def _direct_roughness(values: np.ndarray, emb: np.ndarray, k: int) -> float:
    """The definition, pair by pair: kNN membership either way, median-heuristic sigma."""
    n = len(values)
    d2 = {(i, j): float(np.sum((emb[i] - emb[j]) ** 2)) for i in range(n) for j in range(n)}
    near = {i: sorted((j for j in range(n) if j != i), key=lambda j: (d2[i, j], j))[:k]
            for i in range(n)}
    edges = {(min(i, j), max(i, j)) for i in range(n) for j in near[i]}
    sigma2 = float(np.median([d2[e] for e in edges]))
    v = values / np.max(np.abs(values))
    num = sum(math.exp(-d2[e] / sigma2) * (v[e[0]] - v[e[1]]) ** 2 for e in edges)
    den = sum(math.exp(-d2[e] / sigma2) for e in edges)
    return num / den


@pytest.mark.parametrize("k", [1, 2, 4])
def test_roughness_matches_the_direct_formula(k):
    rng = np.random.default_rng(k)
    emb = rng.normal(size=(7, 3))
    values = rng.normal(size=7)
    assert roughness(values, emb, k) == pytest.approx(_direct_roughness(values, emb, k))
    i, j, _ = knn_edges(emb, k)
    assert np.all(i < j) and len(set(zip(i, j, strict=True))) == len(i)


def test_roughness_is_zero_for_constant_and_high_for_alternating_values():
    emb = np.arange(10, dtype=float)[:, None]
    assert roughness(np.ones(10), emb, 2) == 0.0
    assert roughness(np.array([1.0, -1.0] * 5), emb, 1) == pytest.approx(4.0)


def test_mc_advantages_on_a_hand_made_buffer():
    # Three finished episodes through state 0: action 1 reaches reward 1, action 0 does not;
    # the last episode of the buffer (unfinished) and a continued one (t starts at 3) are out.
    rows = [("a", 0, 0, 1, 0.0), ("a", 1, 5, 0, 1.0),
            ("b", 0, 0, 0, 0.0), ("b", 1, 6, 0, 0.0),
            ("c", 0, 0, 1, 0.0), ("c", 1, 5, 0, 1.0),
            ("d", 0, 0, 0, 0.0), ("d", 1, 6, 0, 0.0),
            ("x", 3, 0, 1, 9.0),
            ("z", 0, 0, 0, 5.0)]
    frame = pd.DataFrame(rows, columns=["episode_id", "t", "state", "action", "reward"])
    a_mc = mc_advantages(frame, gamma=0.5)
    # G at s0: a=1 -> 0 + 0.5 * 1 = 0.5 (twice), a=0 -> 0 (twice); V(s0) = 0.25.
    assert a_mc[0] == pytest.approx(0.25) and a_mc[2] == pytest.approx(-0.25)
    assert a_mc[4] == pytest.approx(0.25) and a_mc[6] == pytest.approx(-0.25)
    assert np.isnan(a_mc[8]) and np.isnan(a_mc[9])  # continued / unfinished episodes
    assert a_mc[1] == pytest.approx(0.0)  # s5 only ever saw action 0


@pytest.fixture(scope="module")
def frozenlake_run(tmp_path_factory, ray_local):
    from iif_ray.cli import main

    run = tmp_path_factory.mktemp("diag") / "fl"
    assert main(["train", "--preset", "frozenlake", "--timesteps", "6144", "--ledger-obs",
                 "--out", str(run)]) == 0
    return run


@pytest.mark.ray
@pytest.mark.slow
def test_learning_diagnosis_and_intervention(frozenlake_run):
    from iif_ray.cli import main
    from iif_ray.ledger import read_ledger

    assert main(["diagnose", str(frozenlake_run), "--intervene", "2", "--seeds", "1",
                 "--episodes", "5"]) == 0
    out = frozenlake_run / "diagnostics"
    for name in ("index.md", "learning_over_rounds.png", "influence_vs_advantage.png",
                 "mc_advantage.png", "intervention.png", "top_bottom_records.csv"):
        assert (out / name).stat().st_size > 0, name
    ledger = read_ledger(str(frozenlake_run / "ledger")).to_pandas()
    table = pd.read_csv(out / "learning_rounds.csv")
    for row in table.itertuples():
        g = ledger[ledger["iteration"] == row.round]
        assert row.share_negative == pytest.approx((g["score"] < 0).mean())
        assert row.spearman_score_adv == pytest.approx(
            stats.spearmanr(g["score"], g["advantage"]).statistic, abs=1e-9)
    mc = pd.read_parquet(out / "mc_advantages.parquet")
    rho = stats.spearmanr(mc["score"], mc["a_mc"] * mc["advantage"]).statistic
    assert f"**{rho:.3f}**" in (out / "index.md").read_text()
    iv = pd.read_parquet(out / "intervention.parquet")
    assert sorted(iv["variant"]) == ["influence", "random", "unfiltered"]
    base = iv.loc[iv["variant"] == "unfiltered", "return"].item()
    for v in ("influence", "random"):
        r = iv[iv["variant"] == v].iloc[0]
        assert r["delta"] == pytest.approx(r["return"] - base)
    # Same count removed both ways (the round's negative-score records), never everything.
    dropped = iv.loc[iv["variant"] != "unfiltered", "dropped"]
    assert dropped.nunique() == 1 and 0 < dropped.iloc[0] < 2048


@pytest.mark.ray
@pytest.mark.slow
def test_behaviour_formation_with_a_probe_file(frozenlake_run, tmp_path):
    from iif_ray.cli import main
    from iif_ray.diagnostics.behaviour import KNN, embeddings
    from iif_ray.diagnostics.ledgers import load_run

    probes = tmp_path / "probes.parquet"
    assert main(["diagnose", str(frozenlake_run), "--probes-out", str(probes),
                 "--probe-round", "1", "--probe-action", "2"]) == 0
    run = tmp_path / "action-run"
    assert main(["train", "--preset", "frozenlake", "--timesteps", "6144", "--ledger-obs",
                 "--target", "action", "--target-option", f"probe_file={probes}",
                 "--mode", "score", "--out", str(run)]) == 0
    assert main(["diagnose", str(run)]) == 0
    out = run / "diagnostics"
    assert (out / "behaviour.png").stat().st_size > 0 and (out / "index.md").exists()
    table = pd.read_csv(out / "behaviour_rounds.csv")
    progress = pd.read_csv(run / "progress.csv")
    np.testing.assert_allclose(table["probe_probability"], np.exp(progress["target_value"]))
    assert ((table["probe_probability"] > 0) & (table["probe_probability"] < 1)).all()
    _, frame, obs = load_run(run)
    emb = embeddings(obs)
    it = int(table["round"].iloc[-1])
    idx = np.flatnonzero((frame["iteration"] == it).to_numpy() & (frame["score"] > 0).to_numpy())
    sub = np.random.default_rng(0).choice(idx, size=min(40, len(idx)), replace=False)
    # The direct pair-by-pair formula on a subsample agrees with the vectorised one on it.
    assert roughness(frame["score"].to_numpy()[sub], emb[sub], KNN) == pytest.approx(
        _direct_roughness(frame["score"].to_numpy()[sub], emb[sub], KNN))
    assert table.loc[table["round"] == it, "roughness"].item() == pytest.approx(
        roughness(frame["score"].to_numpy()[idx], emb[idx], KNN))
