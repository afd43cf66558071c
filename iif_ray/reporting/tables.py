"""What every section of the report shares: algorithm order and colours, the paper's figures,
runs of a method, markdown tables and the two-panel curve figure.

Kept below the sections (classic, evidence, ablation, LM) so that each of them imports these
from here and none imports another section for them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# Paper, Fig. 6(b): IIF vs PPO, mean +- spread over 5 seeds, in percent.
PAPER = {
    "frozenlake": {"SE_ave": "34.0 ± 2.0", "SE_peak": "19.2 ± 5.9", "RT_peak": "29.5 ± 2.9"},
    "acrobot": {"SE_ave": "36.7 ± 6.5", "SE_peak": "48.5 ± 0.8", "RT_peak": "55.2 ± 1.0"},
    "minigrid": {"SE_ave": "65.8 ± 3.3", "SE_peak": "61.7 ± 4.1", "RT_peak": "69.1 ± 1.7"},
    "highway": {"SE_ave": "37.7 ± 6.1", "SE_peak": "55.1 ± 2.9", "RT_peak": "59.9 ± 0.7"},
    "lunarlander": {"SE_ave": "26.0 ± 1.8", "SE_peak": "39.7 ± 3.7", "RT_peak": "44.9 ± 2.5"},
    "bipedalwalker": {"SE_ave": "31.0 ± 8.7", "SE_peak": "26.2 ± 8.0", "RT_peak": "29.2 ± 0.7"},
}
ALGO_ORDER = ("ppo", "iif", "random", "advantage", "sb3-ppo")
COLORS = {"ppo": "tab:gray", "iif": "tab:blue", "random": "tab:orange",
          "advantage": "tab:green", "sb3-ppo": "tab:purple", "ppo-sb3init": "tab:brown",
          "group-filter": "tab:olive", "group-filter+iif": "tab:cyan"}


def ordered_algos(present: set[str]) -> list[str]:
    """The report's algorithm order: the known ones first (PPO leads), then the rest."""
    return [a for a in ALGO_ORDER if a in present] + sorted(present - set(ALGO_ORDER))


def paper_figures(env: str, algo: str) -> str:
    """The paper's SE_ave / SE_peak / RT_peak for IIF on ``env`` ("" for anything else)."""
    paper = PAPER.get(env, {}) if algo == "iif" else {}
    return " / ".join(paper.get(k, "-") for k in ("SE_ave", "SE_peak", "RT_peak")) if paper else ""


def runs_of(df: pd.DataFrame, env: str, algo: str) -> dict[int, pd.DataFrame]:
    """Seed -> that run's rows of ``env`` and ``algo``, in round order."""
    sub = df[(df.env == env) & (df.algo == algo)]
    return {int(s): g.sort_values("round") for s, g in sub.groupby("seed")}


def markdown_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only backend: a report is written where no display is,
    and matplotlib is imported only when a figure is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def curve(axes, xs, mean: np.ndarray, band: np.ndarray, algo: str, n: int) -> None:
    """One algorithm's curve against env steps and against wall-clock, with its band."""
    for ax, x in zip(axes, xs, strict=True):
        ax.plot(x, mean, label=f"{algo} (n={n})", color=COLORS.get(algo))
        ax.fill_between(x, mean - band, mean + band, alpha=0.2, color=COLORS.get(algo))


def finish_curves(fig, axes, ylabel: str, title: str, path: Path) -> None:
    """Label both panels (env steps, training wall-clock), title and save the figure."""
    axes[0].set_xlabel("env steps")
    axes[1].set_xlabel("training wall-clock, s (evaluation excluded)")
    for ax in axes:
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
