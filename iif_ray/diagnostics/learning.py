"""Diagnosis of learning (return target): which records helped or harmed the round's return.

Per round: the share of negative (harmful) records, Spearman(score, advantage), the top and
bottom records; pooled: influence against advantage. With repeated discrete states
(FrozenLake) Monte-Carlo advantages from repeat visits show whether bottom records carry
advantage sign errors (the paper reports Spearman(score, A_mc * A_hat) of about -0.67).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from iif_ray.diagnostics.ledgers import discrete_states, pyplot, state_summaries
from iif_ray.diagnostics.stats import mc_advantages, spearman

RECORD_COLUMNS = ["iteration", "episode_id", "t", "state", "action", "advantage", "score"]


def per_round(frame: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for it, g in frame.groupby("iteration"):
        rows.append({"round": int(it), "records": len(g),
                     "share_negative": float((g["score"] < 0).mean()),
                     "spearman_score_adv": spearman(g["score"], g["advantage"])})
    return pd.DataFrame(rows)


def extremes(frame: pd.DataFrame, rounds: list[int], k: int = 5) -> pd.DataFrame:
    """The ``k`` highest and lowest scored records of each of ``rounds``."""
    parts = []
    for it in rounds:
        g = frame[frame["iteration"] == it].sort_values("score", kind="stable")
        for kind, rows in (("top", g.tail(k)[::-1]), ("bottom", g.head(k))):
            parts.append(rows.assign(kind=kind))
    if not parts:
        return pd.DataFrame()
    out = pd.concat(parts)[["kind", *RECORD_COLUMNS]]
    return out.assign(episode_id=out["episode_id"].astype(str).str[:8])


def pick_rounds(rounds: list[int], n: int = 3) -> list[int]:
    idx = np.unique(np.linspace(0, len(rounds) - 1, min(n, len(rounds))).round().astype(int))
    return [rounds[i] for i in idx]


def mc_analysis(frame: pd.DataFrame, gamma: float, bottom_frac: float = 0.1) -> pd.DataFrame:
    """Per record ``A_mc``, ``A_mc * A_hat`` and sign mismatch, for rounds with repeat visits."""
    parts = []
    for _, g in frame.groupby("iteration"):
        g = g.copy()
        g["a_mc"] = mc_advantages(g, gamma)
        g["mc_x_adv"] = g["a_mc"] * g["advantage"]
        g["sign_mismatch"] = np.sign(g["a_mc"]) != np.sign(g["advantage"])
        cut = g["score"].quantile(bottom_frac)
        g["bottom"] = g["score"] <= cut
        parts.append(g)
    out = pd.concat(parts)
    return out[out["a_mc"].notna()]


def diagnose_learning(frame: pd.DataFrame, obs: np.ndarray | None, gamma: float,
                      out: Path) -> dict:
    """Write the learning-diagnosis tables and plots into ``out``; return headline numbers."""
    plt = pyplot()
    frame = frame.copy()
    summaries = state_summaries(obs)
    frame["state"] = summaries if summaries else "-"
    rounds = sorted(frame["iteration"].unique().tolist())
    table = per_round(frame)
    table.to_csv(out / "learning_rounds.csv", index=False)

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    ax[0].plot(table["round"], table["share_negative"], marker=".")
    ax[0].set(xlabel="round", ylabel="share of negative records", ylim=(0, 1))
    ax[1].plot(table["round"], table["spearman_score_adv"], marker=".", color="tab:red")
    ax[1].axhline(0, color="gray", lw=0.5)
    ax[1].set(xlabel="round", ylabel="Spearman(score, advantage)", ylim=(-1, 1))
    fig.tight_layout()
    fig.savefig(out / "learning_over_rounds.png", dpi=100)
    plt.close(fig)

    shown = pick_rounds(rounds, 4)
    fig, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), 3.2), squeeze=False)
    for a, it in zip(axes[0], shown, strict=True):
        g = frame[frame["iteration"] == it]
        a.scatter(g["advantage"], g["score"], s=4, alpha=0.5,
                  c=np.where(g["kept"], "tab:blue", "tab:red"))
        a.axhline(0, color="gray", lw=0.5)
        a.axvline(0, color="gray", lw=0.5)
        a.set(title=f"round {it}", xlabel="advantage (raw GAE)", ylabel="influence score")
    fig.tight_layout()
    fig.savefig(out / "influence_vs_advantage.png", dpi=100)
    plt.close(fig)

    extremes(frame, pick_rounds(rounds, 3)).to_csv(out / "top_bottom_records.csv", index=False)
    headline = {
        "rounds": len(rounds),
        "mean_share_negative": float(table["share_negative"].mean()),
        "mean_spearman_score_adv": float(table["spearman_score_adv"].mean()),
    }

    states = discrete_states(obs)
    if states is not None:
        frame["state"] = states
        mc = mc_analysis(frame, gamma)
        if len(mc) >= 3:
            mc[["iteration", "episode_id", "t", "state", "action", "advantage", "a_mc",
                "mc_x_adv", "sign_mismatch", "bottom", "score"]].to_parquet(
                out / "mc_advantages.parquet", index=False)
            headline.update(
                mc_records=len(mc),
                spearman_score_mc_x_adv=spearman(mc["score"], mc["mc_x_adv"]),
                sign_mismatch_bottom=float(mc.loc[mc["bottom"], "sign_mismatch"].mean()),
                sign_mismatch_all=float(mc["sign_mismatch"].mean()),
            )
            fig, a = plt.subplots(figsize=(4.5, 3.5))
            a.scatter(mc["mc_x_adv"], mc["score"], s=5, alpha=0.5,
                      c=np.where(mc["sign_mismatch"], "tab:red", "tab:blue"))
            a.axhline(0, color="gray", lw=0.5)
            a.set(xlabel="A_mc x A_hat  (red: sign mismatch)", ylabel="influence score",
                  title=f"Spearman {headline['spearman_score_mc_x_adv']:.2f}")
            fig.tight_layout()
            fig.savefig(out / "mc_advantage.png", dpi=100)
            plt.close(fig)
    return headline
