"""Behaviour formation (action target): which records shape a chosen behaviour, round by round.

The run scores every record against ``f_action`` (mean log-probability of the probe actions
at the probe states). Per round: the top records, and the roughness of the positive
influence over a kNN graph of record embeddings (normalised Dirichlet energy, paper §4.2),
beside the probe action's probability before the round's update.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from iif_ray.diagnostics.learning import RECORD_COLUMNS, pick_rounds
from iif_ray.diagnostics.ledgers import pyplot, state_summaries
from iif_ray.diagnostics.stats import roughness

KNN = 20


def embeddings(obs: np.ndarray) -> np.ndarray:
    """Record embeddings: observations, flattened and standardised per feature.

    (The paper embeds with the final network; observations keep the analysis independent of
    any one checkpoint and need nothing but the ledger.)
    """
    flat = obs.reshape(len(obs), -1).astype(np.float64)
    std = flat.std(axis=0)
    return (flat - flat.mean(axis=0)) / np.where(std > 0, std, 1.0)


def diagnose_behaviour(frame: pd.DataFrame, obs: np.ndarray | None, progress: pd.DataFrame,
                       out: Path, k: int = KNN) -> dict:
    if obs is None:
        raise ValueError("behaviour formation needs observations in the ledger: train with "
                         "--ledger-obs")
    frame = frame.copy()
    frame["state"] = state_summaries(obs)
    emb = embeddings(obs)
    rows = []
    for it, g in frame.groupby("iteration"):
        pos = g.index[g["score"].to_numpy() > 0]
        rows.append({"round": int(it), "positive_records": len(pos),
                     "roughness": roughness(frame.loc[pos, "score"].to_numpy(), emb[pos], k)
                     if len(pos) > 2 else math.nan})
    table = pd.DataFrame(rows)
    prog = progress.rename(columns={"iteration": "round"})[["round", "target_value"]]
    table = table.merge(prog, on="round", how="left")
    # f_action is a mean log-probability: exp gives the probes' geometric-mean probability.
    table["probe_probability"] = np.exp(table["target_value"])
    table.to_csv(out / "behaviour_rounds.csv", index=False)

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(table["round"], table["roughness"], marker=".", label="roughness of influence")
    ax.set(xlabel="round", ylabel="normalised Dirichlet energy")
    ax2 = ax.twinx()
    ax2.plot(table["round"], table["probe_probability"], color="tab:green", marker=".",
             label="probe action probability")
    ax2.set(ylabel="probe action probability", ylim=(0, 1))
    fig.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "behaviour.png", dpi=100)
    plt.close(fig)

    tops = []
    for it in pick_rounds(sorted(frame["iteration"].unique().tolist()), 3):
        g = frame[frame["iteration"] == it].sort_values("score", ascending=False).head(5)
        tops.append(g[RECORD_COLUMNS])
    pd.concat(tops).to_csv(out / "behaviour_top_records.csv", index=False)
    return {"rounds": len(table), "knn": k,
            "roughness_first": float(table["roughness"].iloc[0]),
            "roughness_last": float(table["roughness"].iloc[-1]),
            "probe_probability_first": float(table["probe_probability"].iloc[0]),
            "probe_probability_last": float(table["probe_probability"].iloc[-1])}
