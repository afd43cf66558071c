"""Diagnostics: statistics against independent computations, then each analysis end to end."""

from __future__ import annotations

import math
import re
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from iif_ray.diagnostics.graph import knn_edges, median_sigma2, roughness, squared_distances
from iif_ray.diagnostics.stats import base_episode_id, mc_advantages, returns_to_go, spearman

# ---------------------------------------------------------------- statistics, no Ray


def test_spearman_matches_scipy_with_ties_and_nans():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, 200).astype(float)  # many ties
    y = x + rng.normal(0, 2, 200)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    x[:10] = np.nan
    assert spearman(x, y) == pytest.approx(
        stats.spearmanr(x[10:], y[10:]).statistic, abs=1e-12)
    assert math.isnan(spearman([1.0, 2.0], [2.0, 1.0]))


def _direct_roughness(values, emb, k: int) -> float:
    """The definition, pair by pair: kNN membership either way, sigma^2 the median squared
    distance over all pairs (over the positive ones if that median is 0)."""
    values, emb = np.asarray(values, float), np.asarray(emb, float)
    n = len(values)
    d2 = {(i, j): float(np.sum((emb[i] - emb[j]) ** 2)) for i in range(n) for j in range(n)}
    near = {i: sorted((j for j in range(n) if j != i), key=lambda j: (d2[i, j], j))[:k]
            for i in range(n)}
    all_pairs = [d2[i, j] for i in range(n) for j in range(i + 1, n)]
    sigma2 = float(np.median(all_pairs))
    if sigma2 == 0:
        sigma2 = float(np.median([d for d in all_pairs if d > 0]))
    v = values / np.max(np.abs(values))
    num = den = 0.0
    for i in range(n):
        for j in range(i + 1, n):
            if j in near[i] or i in near[j]:
                w = math.exp(-d2[i, j] / sigma2)
                num += w * (v[i] - v[j]) ** 2
                den += w
    return num / den


def test_roughness_on_a_hand_made_graph():
    # Points 0, 1, 3 on a line, k = 1: edges {0-1, 1-2}; squared distances 1, 9, 4 over
    # all pairs, so sigma^2 = 4; values already have max |v| = 1.
    emb = np.array([[0.0], [1.0], [3.0]])
    values = np.array([1.0, -1.0, 0.5])
    w01, w12 = math.exp(-1 / 4), math.exp(-4 / 4)
    expected = (w01 * 2.0**2 + w12 * 1.5**2) / (w01 + w12)
    assert roughness(values, emb, k=1) == pytest.approx(expected, rel=1e-12)
    i, j, w = knn_edges(emb, 1)
    assert list(zip(i, j, strict=True)) == [(0, 1), (1, 2)]
    np.testing.assert_allclose(w, [w01, w12])


@pytest.mark.parametrize("k", [1, 2, 4, 20])
def test_roughness_matches_the_direct_formula(k):
    rng = np.random.default_rng(k)
    emb = rng.normal(size=(9, 3))
    emb[5] = emb[2]  # a repeated state: distance exactly 0, ties broken by index
    values = rng.normal(size=9)
    assert roughness(values, emb, k) == pytest.approx(_direct_roughness(values, emb, k))
    i, j, _ = knn_edges(emb, k)
    assert np.all(i < j) and len(set(zip(i, j, strict=True))) == len(i)


def test_roughness_limits_and_median_fallback():
    emb = np.arange(10, dtype=float)[:, None]
    assert roughness(np.ones(10), emb, 2) == 0.0
    assert roughness(np.array([1.0, -1.0] * 5), emb, 1) == pytest.approx(4.0)
    # Mostly repeated states: the median squared distance is 0, so the positive ones count.
    dup = np.array([[0.0]] * 6 + [[1.0], [3.0]])
    assert median_sigma2(squared_distances(dup)) == pytest.approx(
        np.median([1.0] * 6 + [9.0] * 6 + [4.0]))


def test_repeated_states_are_exactly_zero_apart_and_tie_by_index():
    """200 records drawn from 40 states in 64 dimensions: ``|a|^2 + |b|^2 - 2ab`` leaves
    rounding noise between repeats (about 1e-12 here), the pairwise computation must not, so
    each record's nearest neighbours are its repeats, in index order."""
    rng = np.random.default_rng(0)
    state = rng.integers(0, 40, 200)
    emb = (rng.normal(size=(40, 64)) * 3 + 1)[state]
    d2 = squared_distances(emb)
    same = state[:, None] == state[None, :]
    assert np.all(d2[same] == 0.0) and np.all(d2[~same] > 0)
    masked = np.where(np.eye(len(emb), dtype=bool), np.inf, d2)
    for n in range(len(emb)):
        repeats = [m for m in np.flatnonzero(same[n]) if m != n]
        assert np.argsort(masked[n], kind="stable")[:len(repeats)].tolist() == repeats
    i, j, w = knn_edges(emb, 3)
    assert np.all(w[same[i, j]] == 1.0)


def test_returns_to_go_against_a_loop():
    frame = pd.DataFrame({"episode_id": ["b", "a", "a", "b", "a"], "t": [1, 2, 0, 0, 1],
                          "reward": [1.0, 2.0, 0.0, 0.5, 1.0]})
    g = returns_to_go(frame, 0.9)
    # episode a: t=0 r0, t=1 r1, t=2 r2; episode b: t=0 r0.5, t=1 r1.
    assert g[2] == pytest.approx(0 + 0.9 * 1 + 0.81 * 2)
    assert g[4] == pytest.approx(1 + 0.9 * 2) and g[1] == pytest.approx(2)
    assert g[3] == pytest.approx(0.5 + 0.9 * 1) and g[0] == pytest.approx(1)


def test_mc_advantages_on_a_hand_made_buffer():
    # Finished episodes through state 0: action 1 reaches reward 1, action 0 does not. "x"
    # started in an earlier round (t from 3) but ends here, so it counts; "z" is cut off by
    # the end of the buffer (the default unfinished chunk) and is left out.
    rows = [("a", 0, 0, 1, 0.0), ("a", 1, 5, 0, 1.0),
            ("b", 0, 0, 0, 0.0), ("b", 1, 6, 0, 0.0),
            ("c", 0, 0, 1, 0.0), ("c", 1, 5, 0, 1.0),
            ("x", 3, 0, 0, 0.0), ("x", 4, 6, 0, 0.0),
            ("y", 0, 7, 2, 0.0),
            ("z", 0, 0, 0, 5.0)]
    frame = pd.DataFrame(rows, columns=["episode_id", "t", "state", "action", "reward"])
    a_mc = mc_advantages(frame, gamma=0.5)
    # G at s0: a=1 -> 0 + 0.5 * 1 = 0.5 (a, c), a=0 -> 0 (b, x); V(s0) = 0.25.
    np.testing.assert_allclose(a_mc[[0, 2, 4, 6]], [0.25, -0.25, 0.25, -0.25])
    assert a_mc[1] == pytest.approx(0.0)  # s5 only ever saw action 0
    assert np.isnan(a_mc[8])  # (s7, a2) seen once
    assert np.isnan(a_mc[9])  # cut off
    # Naming the cut-off chunks explicitly: with "z" counted, s0/a0 gains G = 5.
    a_all = mc_advantages(frame, gamma=0.5, unfinished=[])
    assert a_all[2] == pytest.approx(5 / 3 - (0.5 + 0.5 + 5) / 5)


def test_base_episode_id():
    assert base_episode_id("1e75_282") == "1e75" and base_episode_id("1e75") == "1e75"
    assert base_episode_id("a_b") == "a_b"


# ---------------------------------------------------------------- end to end, real runs

ROUNDS = 4
SMALL = {"steps_per_round": 512, "num_epochs": 2, "timesteps": ROUNDS * 512}


def _train(out, **attribution) -> None:
    """A short FrozenLake run (4 rounds of 512 steps, 2 epochs) with ledger observations."""
    from iif_ray.driver import RunSpec, run
    from iif_ray.presets import get_preset

    preset = replace(get_preset("frozenlake"), **SMALL)
    run(RunSpec(preset=preset, algo="iif", seed=0, out_dir=str(out),
                attribution={"ledger_obs": True, **attribution}))


@pytest.fixture(scope="module")
def frozenlake_run(tmp_path_factory, ray_local):
    run_dir = tmp_path_factory.mktemp("diag") / "fl"
    _train(run_dir)
    return run_dir


def _independent_mc(g: pd.DataFrame, states: np.ndarray, gamma: float,
                    cut_off: set[str]) -> np.ndarray:
    """A_mc by plain loops over one round's ledger rows (dicts, no pandas grouping)."""
    by_ep: dict[str, list[int]] = {}
    for n, ep in enumerate(g["episode_id"]):
        by_ep.setdefault(ep, []).append(n)
    ret = np.zeros(len(g))
    for idx in by_ep.values():
        acc = 0.0
        for n in sorted(idx, key=lambda n: g["t"].iloc[n], reverse=True):
            acc = g["reward"].iloc[n] + gamma * acc
            ret[n] = acc
    sa: dict[tuple, list[float]] = {}
    s_only: dict[int, list[float]] = {}
    for n in range(len(g)):
        if g["episode_id"].iloc[n] in cut_off:
            continue
        sa.setdefault((states[n], g["action"].iloc[n]), []).append(ret[n])
        s_only.setdefault(states[n], []).append(ret[n])
    out = np.full(len(g), np.nan)
    for n in range(len(g)):
        key = (states[n], g["action"].iloc[n])
        if g["episode_id"].iloc[n] not in cut_off and len(sa.get(key, [])) >= 2:
            out[n] = np.mean(sa[key]) - np.mean(s_only[states[n]])
    return out


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_learning_diagnosis_and_intervention(frozenlake_run, capsys):
    from iif_ray.cli import main
    from iif_ray.ledger import read_ledger

    assert main(["diagnose", str(frozenlake_run), "--intervene", "2", "--seeds", "1",
                 "--episodes", "5"]) == 0
    printed = capsys.readouterr().out
    out = frozenlake_run / "diagnostics"
    for name in ("index.md", "learning_over_rounds.png", "influence_vs_advantage.png",
                 "mc_advantage.png", "top_bottom_on_map.png", "intervention.png",
                 "learning_rounds.parquet", "top_bottom_records.parquet",
                 "mc_advantages.parquet", "intervention.parquet"):
        assert (out / name).stat().st_size > 0, name
    index = (out / "index.md").read_text()
    for png in re.findall(r"\]\(([^)]+\.png)\)", index):
        assert (out / png).exists(), png

    # Per-round numbers against scipy on the raw ledger.
    ledger = read_ledger(str(frozenlake_run / "ledger")).to_pandas()
    table = pd.read_parquet(out / "learning_rounds.parquet")
    assert list(table["round"]) == list(range(1, ROUNDS + 1))
    for row in table.itertuples():
        g = ledger[ledger["iteration"] == row.round]
        assert row.share_negative == pytest.approx((g["score"] < 0).mean())
        assert row.spearman_score_adv == pytest.approx(
            stats.spearmanr(g["score"], g["advantage"]).statistic, abs=1e-9)
    share = np.mean([(g["score"] < 0).mean() for _, g in ledger.groupby("iteration")])
    assert f"share negative {share:.3f}" in printed
    assert f"mean share of negative records: **{share:.3f}**" in index

    # Monte-Carlo advantages against plain loops, and their Spearman against scipy.
    mc = pd.read_parquet(out / "mc_advantages.parquet")
    gamma = 0.99
    for k in (2, ROUNDS):
        g = ledger[ledger["iteration"] == k].reset_index(drop=True)
        states = np.stack(g["obs"].to_numpy()).argmax(axis=1)
        nxt = ledger[ledger["iteration"] == k + 1]
        going_on = {base_episode_id(e) for e in nxt["episode_id"]}
        cut_off = ({e for e in g["episode_id"] if base_episode_id(e) in going_on}
                   if len(nxt) else {g["episode_id"].iloc[-1]})
        expected = _independent_mc(g, states, gamma, cut_off)
        got = mc[mc["iteration"] == k].set_index(["episode_id", "t"])["a_mc"]
        keyed = pd.Series(expected, index=pd.MultiIndex.from_frame(g[["episode_id", "t"]]))
        keyed = keyed.dropna()
        assert len(got) == len(keyed) > 0
        np.testing.assert_allclose(got.loc[keyed.index].to_numpy(), keyed.to_numpy(),
                                   rtol=1e-5, atol=1e-6)
        sub = mc[mc["iteration"] == k]
        rho = stats.spearmanr(sub["score"], sub["a_mc"] * sub["advantage"]).statistic
        assert table.loc[table["round"] == k, "spearman_score_mc_x_adv"].item() == \
            pytest.approx(rho, abs=1e-9)

    # Intervention: three variants on one buffer, deltas against the unfiltered update.
    iv = pd.read_parquet(out / "intervention.parquet")
    assert sorted(iv["variant"]) == ["influence", "random", "unfiltered"]
    base = iv.loc[iv["variant"] == "unfiltered", "value"].item()
    for v in ("influence", "random"):
        r = iv[iv["variant"] == v].iloc[0]
        assert r["delta"] == pytest.approx(r["value"] - base)
        assert 0.0 <= r["value"] <= 1.0  # FrozenLake returns
    dropped = iv.loc[iv["variant"] != "unfiltered", "dropped"]
    assert dropped.nunique() == 1 and 0 < dropped.iloc[0] < 512
    assert "[1/1] seed 0 round 2: return" in printed


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_behaviour_formation_and_action_intervention(frozenlake_run, tmp_path, capsys):
    import torch
    from ray.rllib.core.columns import Columns
    from ray.rllib.core.models.base import ENCODER_OUT
    from ray.rllib.core.rl_module.rl_module import RLModule

    from iif_ray.cli import main
    from iif_ray.diagnostics.graph import KNN
    from iif_ray.diagnostics.ledgers import load_run
    from iif_ray.rllib.run_files import module_checkpoint

    probes = tmp_path / "probes.parquet"
    assert main(["diagnose", str(frozenlake_run), "--probes-out", str(probes),
                 "--probe-round", "2", "--probe-action", "2"]) == 0
    run_dir = tmp_path / "action-run"
    _train(run_dir, mode="score", target="action",
           target_options={"probe_file": str(probes)})
    capsys.readouterr()
    assert main(["diagnose", str(run_dir), "--intervene", "2", "--seeds", "1"]) == 0
    printed = capsys.readouterr().out
    out = run_dir / "diagnostics"
    for name in ("index.md", "behaviour.png", "behaviour_scores.png", "intervention.png",
                 "behaviour_rounds.parquet", "behaviour_top_records.parquet"):
        assert (out / name).stat().st_size > 0, name
    assert "final policy's last hidden layer (64 units)" in (out / "index.md").read_text()

    table = pd.read_parquet(out / "behaviour_rounds.parquet")
    progress = pd.read_csv(run_dir / "progress.csv")
    np.testing.assert_allclose(table["probe_probability"], np.exp(progress["target_value"]))
    assert ((table["probe_probability"] > 0) & (table["probe_probability"] < 1)).all()

    # Embeddings recomputed from the checkpoint by another path (the actor encoder's output
    # is the last hidden layer: the pi head is one linear layer), then the roughness of the
    # last round by the pair-by-pair formula.
    _, frame, obs = load_run(run_dir)
    module = RLModule.from_checkpoint(module_checkpoint(run_dir).resolve())
    with torch.no_grad():
        emb = module.encoder.actor_encoder(
            {Columns.OBS: torch.as_tensor(obs)})[ENCODER_OUT].double().numpy()
    it = int(table["round"].iloc[-1])
    idx = np.flatnonzero((frame["iteration"] == it).to_numpy() & (frame["score"] > 0).to_numpy())
    assert table.loc[table["round"] == it, "positive_records"].item() == len(idx)
    expected = _direct_roughness(frame["score"].to_numpy()[idx], emb[idx], KNN)
    assert table.loc[table["round"] == it, "roughness"].item() == pytest.approx(
        expected, rel=1e-6)

    # The action-target intervention measures the probe probability after each update.
    iv = pd.read_parquet(out / "intervention.parquet")
    assert sorted(iv["variant"]) == ["influence", "random", "unfiltered"]
    assert ((iv["value"] > 0) & (iv["value"] < 1)).all()
    base = iv.loc[iv["variant"] == "unfiltered", "value"].item()
    for v in ("influence", "random"):
        r = iv[iv["variant"] == v].iloc[0]
        assert r["delta"] == pytest.approx(r["value"] - base)
    assert "[1/1] seed 0 round 2: probe_probability" in printed
