"""Diagnosis of learning (return target): which records helped or harmed each round's update.

Per round: the share of negative (harmful) records, Spearman(score, advantage), the top and
bottom records. With repeated discrete states (FrozenLake), Monte-Carlo advantages from
repeat visits show whether bottom records carry advantage sign errors (paper §4.1, Fig. 3).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from iif_ray.diagnostics.ledgers import (
    FROZENLAKE_MOVES,
    action_labels,
    discrete_states,
    frozenlake_map,
    grid_side,
    pyplot,
    show_rounds,
    state_summaries,
)
from iif_ray.diagnostics.stats import base_episode_id, mc_advantages, spearman

RECORD_COLUMNS = ["iteration", "episode_id", "t", "state", "action", "advantage", "score"]
BOTTOM_FRACTION = 0.1  # "bottom records" of a round for the sign-mismatch comparison
GRID_RECORDS = 100  # records per picture in the grid view (the paper shows 100)


def per_round(frame: pd.DataFrame) -> pd.DataFrame:
    """Share of negative records and Spearman(score, advantage) per round."""
    rows = []
    for it, g in frame.groupby("iteration"):
        rows.append({"round": int(it), "records": len(g),
                     "share_negative": float((g["score"] < 0).mean()),
                     "spearman_score_adv": spearman(g["score"], g["advantage"])})
    return pd.DataFrame(rows)


def extremes(frame: pd.DataFrame, k: int = 5) -> pd.DataFrame:
    """The ``k`` highest and lowest scored records of every round."""
    parts = []
    for _, g in frame.groupby("iteration"):
        g = g.sort_values("score", kind="stable")
        parts.append(g.tail(k)[::-1].assign(kind="top"))
        parts.append(g.head(k).assign(kind="bottom"))
    out = pd.concat(parts)
    cols = ["kind", *RECORD_COLUMNS] + (["move"] if "move" in out else [])
    return out[cols].reset_index(drop=True)


def unfinished_chunks(frame: pd.DataFrame) -> dict[int, set[str]]:
    """Per round, the episode chunks cut off by the end of the buffer: those whose episode
    goes on in the next round (the last round: its buffer's last chunk)."""
    rounds = sorted(frame["iteration"].unique().tolist())
    base = frame["episode_id"].map(base_episode_id)
    out: dict[int, set[str]] = {}
    for k, nxt in zip(rounds, [*rounds[1:], None], strict=True):
        here = frame["iteration"] == k
        if nxt is None:
            out[k] = {frame.loc[here, "episode_id"].iloc[-1]}
        else:
            going_on = set(base[frame["iteration"] == nxt])
            out[k] = set(frame.loc[here & base.isin(going_on), "episode_id"])
    return out


def mc_analysis(frame: pd.DataFrame, gamma: float) -> pd.DataFrame:
    """Per record ``a_mc``, ``mc_x_adv`` (``A_mc * A_hat``), sign mismatch and whether it is
    among its round's bottom 10% of scores; only records with a Monte-Carlo estimate."""
    cut_off = unfinished_chunks(frame)
    parts = []
    for it, g in frame.groupby("iteration"):
        g = g.copy()
        g["a_mc"] = mc_advantages(g, gamma, unfinished=cut_off[int(it)])
        g["mc_x_adv"] = g["a_mc"] * g["advantage"]
        g["abs_mc_minus_adv"] = (g["a_mc"] - g["advantage"]).abs()
        g["sign_mismatch"] = np.sign(g["a_mc"]) != np.sign(g["advantage"])
        g["bottom"] = g["score"] <= g["score"].quantile(BOTTOM_FRACTION)
        parts.append(g)
    out = pd.concat(parts)
    return out[out["a_mc"].notna()]


def mc_per_round(mc: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for it, g in mc.groupby("iteration"):
        rows.append({"round": int(it), "mc_records": len(g),
                     "spearman_score_mc_x_adv": spearman(g["score"], g["mc_x_adv"]),
                     "sign_mismatch_bottom": float(g.loc[g["bottom"], "sign_mismatch"].mean()),
                     "sign_mismatch_all": float(g["sign_mismatch"].mean())})
    return pd.DataFrame(rows)


def _plot_over_rounds(plt, table: pd.DataFrame, path: Path) -> None:
    has_mc = "spearman_score_mc_x_adv" in table
    fig, ax = plt.subplots(1, 3 if has_mc else 2, figsize=(13 if has_mc else 9, 3.4))
    ax[0].plot(table["round"], table["share_negative"], marker=".")
    ax[0].set(xlabel="round", ylabel="share of negative records", ylim=(0, 1),
              title="harmful records per round")
    ax[1].plot(table["round"], table["spearman_score_adv"], marker=".", color="tab:red")
    ax[1].axhline(0, color="gray", lw=0.5)
    ax[1].set(xlabel="round", ylabel="Spearman", ylim=(-1, 1), title="Spearman(score, A_hat)")
    if has_mc:
        ax[2].plot(table["round"], table["spearman_score_mc_x_adv"], marker=".",
                   color="tab:purple", label="Spearman(score, A_mc x A_hat)")
        ax[2].plot(table["round"], table["sign_mismatch_bottom"], marker=".", color="tab:red",
                   label="sign mismatch, bottom 10%")
        ax[2].plot(table["round"], table["sign_mismatch_all"], marker=".", color="tab:gray",
                   label="sign mismatch, all")
        ax[2].axhline(0, color="gray", lw=0.5)
        ax[2].set(xlabel="round", ylim=(-1, 1), title="Monte-Carlo advantage check")
        ax[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _score_scatter(plt, frame: pd.DataFrame, shown: list[int], path: Path, *, x: str,
                   red: str, xlabel: str, title: Callable[[int], str], width: float) -> None:
    """One panel per shown round: ``x`` against the influence score, rows where ``red`` holds
    in red; ``title(round)`` names each panel."""
    fig, axes = plt.subplots(1, len(shown), figsize=(width * len(shown), 3.4), squeeze=False)
    for a, it in zip(axes[0], shown, strict=True):
        g = frame[frame["iteration"] == it]
        a.scatter(g[x], g["score"], s=5, alpha=0.5,
                  c=np.where(g[red], "tab:red", "tab:blue"))
        a.axhline(0, color="gray", lw=0.5)
        a.axvline(0, color="gray", lw=0.5)
        a.set(title=title(it), xlabel=xlabel, ylabel="influence score")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_scatter(plt, frame: pd.DataFrame, shown: list[int], path: Path) -> None:
    _score_scatter(plt, frame.assign(dropped=~frame["kept"].astype(bool)), shown, path,
                   x="advantage", red="dropped", xlabel="advantage (raw GAE)", width=3.3,
                   title=lambda it: f"round {it} (red: dropped)")


def _plot_mc(plt, mc: pd.DataFrame, table: pd.DataFrame, shown: list[int], path: Path) -> None:
    shown = [k for k in shown if (mc["iteration"] == k).any()]
    if not shown:
        return
    rho = table.set_index("round")["spearman_score_mc_x_adv"]
    _score_scatter(plt, mc, shown, path, x="mc_x_adv", red="sign_mismatch", width=3.5,
                   xlabel="A_mc x A_hat (red: signs differ)",
                   title=lambda it: f"round {it}: Spearman {rho.get(it, np.nan):.2f}")


_ARROW = {0: (-1, 0), 1: (0, 1), 2: (1, 0), 3: (0, -1)}  # FrozenLake move -> (dx, dy down)


def _plot_grid(plt, frame: pd.DataFrame, side: int, desc: list[str] | None,
               shown: list[int], path: Path) -> None:
    """The paper's Fig. 3a view: the top and bottom records of a round drawn on the map,
    one arrow per (state, move), width by count, colour by the sign of the GAE advantage."""
    fig, axes = plt.subplots(2, len(shown), figsize=(3.0 * len(shown), 6.2), squeeze=False)
    colours = {"H": "#555555", "G": "#3cb371", "S": "#add8e6", "F": "#f4f4f4"}
    for col, it in enumerate(shown):
        g = frame[frame["iteration"] == it].sort_values("score", kind="stable")
        for row, (kind, recs) in enumerate((("top", g.tail(GRID_RECORDS)),
                                            ("bottom", g.head(GRID_RECORDS)))):
            a = axes[row][col]
            for s in range(side * side):
                r, c = divmod(s, side)
                tile = desc[r][c] if desc else "F"
                a.add_patch(plt.Rectangle((c, r), 1, 1, facecolor=colours.get(tile, "white"),
                                          edgecolor="gray", lw=0.5))
                if desc:
                    a.text(c + 0.08, r + 0.25, tile, fontsize=7, color="black")
            counts = recs.groupby(["state", "action"]).agg(
                n=("score", "size"), adv=("advantage", "mean")).reset_index()
            for st, act, n, adv in counts.itertuples(index=False):
                if int(act) not in _ARROW:
                    continue
                r, c = divmod(int(st), side)
                dx, dy = _ARROW[int(act)]
                a.arrow(c + 0.5, r + 0.5, 0.32 * dx, 0.32 * dy, width=0.02 + 0.1 * n / len(recs),
                        head_width=0.12 + 0.15 * n / len(recs), head_length=0.08,
                        length_includes_head=True,
                        color="tab:red" if adv > 0 else "tab:blue", alpha=0.8)
            a.set(xlim=(0, side), ylim=(side, 0), xticks=[], yticks=[], aspect="equal",
                  title=f"round {it}: {kind} {len(recs)}")
    fig.suptitle("moves of the top / bottom records (red: A_hat > 0, blue: A_hat < 0)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def diagnose_learning(frame: pd.DataFrame, obs: np.ndarray | None, summary: dict,
                      out: Path) -> dict:
    """Write the learning-diagnosis tables and plots into ``out``; return headline numbers."""
    plt = pyplot()
    env_id = str(summary.get("env", ""))
    gamma = float(summary.get("preset_settings", {}).get("gamma", 0.99))
    frame = frame.copy()
    summaries = state_summaries(obs)
    frame["state"] = summaries if summaries else "-"
    if env_id.startswith("FrozenLake"):
        frame["move"] = action_labels(frame["action"].to_numpy(), env_id)
    rounds = sorted(frame["iteration"].unique().tolist())
    shown = show_rounds(rounds)
    table = per_round(frame)
    extremes(frame).to_parquet(out / "top_bottom_records.parquet", index=False)
    _plot_scatter(plt, frame, shown, out / "influence_vs_advantage.png")
    headline: dict = {
        "rounds": len(rounds), "shown_rounds": shown,
        "mean_share_negative": float(table["share_negative"].mean()),
        "mean_spearman_score_adv": float(table["spearman_score_adv"].mean()),
    }

    states = discrete_states(obs)
    if states is not None:
        frame["state"] = states
        mc = mc_analysis(frame, gamma)
        if len(mc) >= 3:
            keep = ["iteration", "episode_id", "t", "state", "action", "advantage", "a_mc",
                    "mc_x_adv", "abs_mc_minus_adv", "sign_mismatch", "bottom", "score"]
            mc[keep].to_parquet(out / "mc_advantages.parquet", index=False)
            table = table.merge(mc_per_round(mc), on="round", how="left")
            headline.update(
                mc_records=len(mc),
                median_spearman_score_mc_x_adv=float(
                    table["spearman_score_mc_x_adv"].median()),
                spearman_score_mc_x_adv_shown={
                    int(k): float(v) for k, v in table.set_index("round").loc[
                        [k for k in shown if k in set(table["round"])],
                        "spearman_score_mc_x_adv"].items()},
                sign_mismatch_bottom=float(mc.loc[mc["bottom"], "sign_mismatch"].mean()),
                sign_mismatch_all=float(mc["sign_mismatch"].mean()),
            )
            _plot_mc(plt, mc, table, shown, out / "mc_advantage.png")
        side = grid_side(obs)
        if side and env_id.startswith("FrozenLake") and frame["action"].isin(
                list(FROZENLAKE_MOVES)).all():
            _plot_grid(plt, frame, side, frozenlake_map(summary), shown,
                       out / "top_bottom_on_map.png")
            headline["grid"] = True
    table.to_parquet(out / "learning_rounds.parquet", index=False)
    _plot_over_rounds(plt, table, out / "learning_over_rounds.png")
    return headline
