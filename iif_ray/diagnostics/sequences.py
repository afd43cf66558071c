"""``iif-ray diagnose`` for an LM run: which sequences the influence scores call harmful, and why.

A user who turns the filter on wants to see what it removed. The ledger of an LM run holds
every sequence of every round with its reward, last-token advantage, score and whether it
was kept; this module turns it into:

* per round: the share of negative (harmful) scores, Spearman(score, reward) and
  Spearman(score, advantage), and the kept and dropped rows side by side (mean reward, the
  evaluation detector's toxic share, response length);
* the most helpful and most harmful sequences of a few rounds, verbatim;
* a picture of the first two over rounds, the tables as Parquet beside it.

A positive score means helpful (the record's update moves the target up). If the scores read
the reward the way the update does, harmful records are the low-advantage ones the update
would still reinforce or the high-advantage ones it would suppress; Spearman(score, reward)
shows which dominates.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from iif_ray.diagnostics.ledgers import pyplot, show_rounds
from iif_ray.diagnostics.stats import spearman
from iif_ray.ledger import read_ledger
from iif_ray.lm import detox
from iif_ray.lm.spec import read_spec
from iif_ray.run import LEDGER, ledger_dir

ROUNDS_FILE = "lm_rounds.parquet"
EXTREMES_FILE = "lm_top_bottom.parquet"
PLOT_FILE = "lm_over_rounds.png"
EXTREMES = 5  # sequences shown at each end of a pictured round


def load_sequences(run_dir: str | Path) -> pd.DataFrame:
    """The run's ledger with each response's evaluation-detector flag (``toxic``).

    Raises:
        FileNotFoundError: no ledger.
        ValueError: no scores (a PPO run scores nothing).
    """
    ledger = ledger_dir(run_dir)
    if not ledger.is_dir() or not any(ledger.iterdir()):
        raise FileNotFoundError(f"{str(run_dir)!r} has no {LEDGER}/ (an LM run writes one "
                                "every round)")
    frame = read_ledger(str(ledger)).to_pandas().sort_values(["iteration", "row"])
    if frame["score"].isna().all():
        raise ValueError(f"{str(run_dir)!r} has no influence scores (trained with --algo "
                         "ppo); diagnose a run trained with --algo iif or random")
    return frame.assign(toxic=detox.toxic_flags(frame["response"].tolist())).reset_index(
        drop=True)


def round_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per round: score shares and correlations, kept against dropped rows."""
    rows = []
    for k, r in frame.groupby("iteration"):
        kept, dropped = r[r.kept], r[~r.kept]
        rows.append({
            "round": int(k), "records": len(r), "share_negative": float((r.score < 0).mean()),
            "spearman_score_reward": spearman(r.score, r.reward),
            "spearman_score_advantage": spearman(r.score, r.advantage),
            "share_dropped": float(len(dropped) / len(r)),
            "reward_kept": float(kept.reward.mean()),
            "reward_dropped": float(dropped.reward.mean()) if len(dropped) else np.nan,
            "toxic_kept": float(kept.toxic.mean()),
            "toxic_dropped": float(dropped.toxic.mean()) if len(dropped) else np.nan,
            "tokens_kept": float(kept.response_tokens.mean()),
            "tokens_dropped": (float(dropped.response_tokens.mean()) if len(dropped)
                               else np.nan),
        })
    return pd.DataFrame(rows)


def extremes(frame: pd.DataFrame, rounds: list[int], n: int = EXTREMES) -> pd.DataFrame:
    """The ``n`` most helpful and ``n`` most harmful sequences of each round in ``rounds``
    (fewer when a round has under ``2 n``: the two ends never share a sequence)."""
    parts = []
    for k in rounds:
        r = frame[frame.iteration == k].sort_values("score")
        m = min(n, len(r) // 2)
        for end, rows in (("most harmful", r.head(m)), ("most helpful", r.tail(m)[::-1])):
            parts.append(rows.assign(end=end))
    cols = ["iteration", "end", "score", "reward", "advantage", "kept", "toxic", "prompt",
            "response"]
    return pd.concat(parts, ignore_index=True)[cols]


def plot_rounds(table: pd.DataFrame, path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].plot(table["round"], table.share_negative, label="share of negative scores")
    axes[0].plot(table["round"], table.spearman_score_reward, label="Spearman(score, reward)")
    axes[0].plot(table["round"], table.spearman_score_advantage,
                 label="Spearman(score, advantage)")
    axes[0].axhline(0, color="black", lw=0.5)
    axes[1].plot(table["round"], table.reward_kept, label="kept")
    axes[1].plot(table["round"], table.reward_dropped, label="dropped")
    axes[1].set_ylabel("mean reward")
    for ax in axes:
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _quote(text: str, width: int = 90) -> str:
    text = " ".join(str(text).split()).replace("|", "/")
    return text if len(text) <= width else text[:width - 1] + "…"


def diagnose_lm(run_dir: str | Path, out: Path, echo: Callable[[str], None] = print
                ) -> list[str]:
    """Write the tables and the picture into ``out``; return the markdown of ``index.md``."""
    spec = read_spec(run_dir)
    echo(f"reading the ledger of {run_dir} and flagging responses with the evaluation "
         "detector")
    frame = load_sequences(run_dir)
    table = round_table(frame)
    table.to_parquet(out / ROUNDS_FILE)
    shown = show_rounds(sorted(frame.iteration.unique().tolist()))
    ext = extremes(frame, shown)
    ext.to_parquet(out / EXTREMES_FILE)
    plot_rounds(table, out / PLOT_FILE)
    dropped = frame[~frame.kept]
    kept = frame[frame.kept]
    parts = [f"# Diagnostics: {spec.algo} (LM, target `{spec.target}`), seed {spec.seed}", "",
             f"{len(table)} rounds, {len(frame):,} sequences ({len(dropped):,} dropped). A "
             "positive score means helpful.", "",
             "| picture | numbers |", "|---|---|",
             f"| ![over rounds]({PLOT_FILE}) | "
             f"mean share of negative scores: **{table.share_negative.mean():.3f}**<br>"
             f"median Spearman(score, reward): "
             f"**{table.spearman_score_reward.median():.3f}**<br>"
             f"median Spearman(score, advantage): "
             f"**{table.spearman_score_advantage.median():.3f}**<br>"
             f"mean reward kept / dropped: **{kept.reward.mean():.3f}** / "
             f"**{dropped.reward.mean():.3f}**<br>"
             f"toxic share kept / dropped (evaluation detector): **{kept.toxic.mean():.3f}** / "
             f"**{dropped.toxic.mean():.3f}** |", "",
             f"Full table: `{ROUNDS_FILE}`.", ""]
    for k in shown:
        rows = ext[ext.iteration == k]
        parts += [f"## Round {k}: the {EXTREMES} most harmful and most helpful sequences", "",
                  "| end | score | reward | advantage | kept | toxic | prompt | response |",
                  "|---|---|---|---|---|---|---|---|"]
        parts += [f"| {r.end} | {r.score:.3g} | {r.reward:.3g} | {r.advantage:.3g} | "
                  f"{'yes' if r.kept else 'no'} "
                  f"| {'yes' if r.toxic else 'no'} | {_quote(r.prompt, 40)} | "
                  f"{_quote(r.response)} |" for r in rows.itertuples()]
        parts.append("")
    parts.append(f"All shown sequences: `{EXTREMES_FILE}`.")
    return parts
