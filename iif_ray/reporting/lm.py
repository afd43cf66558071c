"""The LM sweep's section of ``report.md``: held-out toxicity and reward, with rliable intervals.

An LM sweep's ``rounds.csv`` carries the classic round row (its ``eval_return`` is the
held-out reward), which the report's generic table reads. What that record cannot carry is
the evaluation *detector*: the paper judges detoxification with a detector other than the
reward's, so an LM run's progress file records VADER's toxic rate on held-out prompts too. This
module reads every run's progress file (under the sweep's ``lm/`` directory) and states,
per metric, the IQM with its 95% stratified-bootstrap interval, P(algo better than PPO) and
the mean paired difference from PPO's same seed (both with intervals), and the verdict the
intervals support. Evaluation rounds sample from fixed held-out prompts with a fixed seed, so
every algorithm and seed is judged on the same prompts (common random numbers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from iif_ray.reporting import stats as st
from iif_ray.reporting.metrics import FINAL_FRACTION, run_scores
from iif_ray.reporting.rounds import LM_ENV, progress_table
from iif_ray.reporting.tables import COLORS, markdown_table, ordered_algos, pyplot

LM_RUNS = "lm"  # the LM sweep's run directories: <out>/lm/<algo>-seed<k>


@dataclass(frozen=True)
class Metric:
    column: str
    label: str
    higher_is_better: bool


METRICS = (
    Metric("eval_toxic_rate", "held-out toxic rate (VADER compound < -0.3, the evaluation "
           "detector)", higher_is_better=False),
    Metric("eval_reward", "held-out reward (the training classifier's log-odds of clean, on "
           "evaluation prompts)", higher_is_better=True),
)


def complete_runs(df: pd.DataFrame) -> tuple[pd.DataFrame, int, list[str]]:
    """The runs that reached the sweep's last round, that round, and notes on the others."""
    last = df.groupby(["algo", "seed"])["round"].max()
    rounds = int(last.max())
    partial = [f"{a}-seed{s} (round {r})" for (a, s), r in last.items() if r < rounds]
    keep = last[last == rounds].index
    kept = df.set_index(["algo", "seed"]).loc[keep].reset_index()
    notes = [f"left out, not finished: {', '.join(partial)}"] if partial else []
    return kept, rounds, notes


def metric_table(df: pd.DataFrame, metric: Metric, rounds: int
                 ) -> tuple[list[list[str]], list[str]]:
    """Rows per algorithm and the verdict sentences for IIF (and the random control)."""
    algos = ordered_algos(set(df.algo))
    scores = {a: {int(s): run_scores(r, metric.column, rounds)
                  for s, r in df[df.algo == a].groupby("seed")} for a in algos}
    sign = 1.0 if metric.higher_is_better else -1.0
    matrix = {a: np.array([scores[a][s] for s in sorted(scores[a])]) for a in algos}
    iqm_final = st.iqm({a: m[:, :1] for a, m in matrix.items()})
    iqm_auc = st.iqm({a: m[:, 1:] for a, m in matrix.items()})
    rows, verdicts = [], []
    for a in algos:
        poi = [st.NAN, st.NAN]
        delta = [st.NAN, st.NAN]
        if a != "ppo" and "ppo" in matrix:
            paired = sorted(set(scores[a]) & set(scores["ppo"]))
            for j in (0, 1):
                poi[j] = st.probability_of_improvement(sign * matrix[a][:, j:j + 1],
                                                       sign * matrix["ppo"][:, j:j + 1])
                delta[j] = st.mean(np.array([scores[a][s][j] - scores["ppo"][s][j]
                                             for s in paired]))
            verdicts.append(_verdict(a, metric, poi, delta))
        rows.append([a, str(len(matrix[a])), f"{np.mean(matrix[a][:, 0]):.4g}",
                     iqm_final[a].fmt(1, 3), iqm_auc[a].fmt(1, 3), poi[0].fmt(), poi[1].fmt(),
                     delta[0].fmt(1, 3), delta[1].fmt(1, 3)])
    return rows, verdicts


def _verdict(algo: str, metric: Metric, poi: list[st.Estimate], delta: list[st.Estimate]
             ) -> str:
    name = "IIF" if algo == "iif" else f"`{algo}`"
    better = "lower" if not metric.higher_is_better else "higher"
    answer = {1: "**yes**", -1: "**no**: PPO's is better", 0: "**not resolved** at this "
              "precision"}
    return (f"**Verdict ({algo}, {metric.column}).** {name}'s {metric.column} is {better} "
            f"than PPO's at the end of the run: {answer[poi[0].side(0.5)]} "
            f"(P = {poi[0].fmt()}, paired difference {delta[0].fmt(1, 3)}); over the whole "
            f"run (AUC): {answer[poi[1].side(0.5)]} (P = {poi[1].fmt()}, paired difference "
            f"{delta[1].fmt(1, 3)}).")


def timing_table(df: pd.DataFrame) -> list[list[str]]:
    """Per algorithm: mean seconds per round (round 1, with its start-up, left out), the
    scoring / update ratio, and the share of rows dropped."""
    rows = []
    for a in ordered_algos(set(df.algo)):
        d = df[(df.algo == a) & (df["round"] >= 2)]
        ratio = d["scoring_s"].sum() / d["update_s"].sum() if d["update_s"].sum() else math.nan
        rows.append([a, f"{d['round_s'].mean():.2f}", f"{d['generate_s'].mean():.2f}",
                     f"{d['scoring_s'].mean():.2f}", f"{d['update_s'].mean():.2f}",
                     f"{ratio:.3f}", f"{d['frac_dropped'].mean():.3f}"])
    return rows


def plot_lm(df: pd.DataFrame, path: Path) -> None:
    """Both held-out metrics against rounds: mean over seeds and its standard error."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(METRICS), figsize=(11, 4))
    for ax, metric in zip(axes, METRICS, strict=True):
        for a in ordered_algos(set(df.algo)):
            ev = df[df.algo == a].dropna(subset=[metric.column])
            by_round = ev.groupby("round")[metric.column]
            mean, se = by_round.mean(), by_round.sem().fillna(0.0)
            ax.plot(mean.index, mean, label=f"{a} (n={ev.seed.nunique()})", color=COLORS.get(a))
            ax.fill_between(mean.index, mean - se, mean + se, alpha=0.2, color=COLORS.get(a))
        ax.set_xlabel("round")
        ax.set_ylabel(metric.column)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{LM_ENV}: held-out evaluation, mean ± standard error over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


METRIC_HEAD = ["algo", "seeds", "final (mean)", "final IQM [95% CI]", "AUC IQM [95% CI]",
               "P(better than PPO) final", "P(better than PPO) AUC",
               "paired diff. from PPO, final", "paired diff. from PPO, AUC"]
TIMING_HEAD = ["algo", "s / round", "generate s", "scoring s", "update s",
               "scoring / update", "frac dropped"]


def lm_sections(directory: Path) -> list[str]:
    """Markdown for the LM runs under ``directory/lm`` (nothing when there are none)."""
    df = progress_table(directory / LM_RUNS)
    if df.empty:
        return []
    df, rounds, notes = complete_runs(df)
    png = directory / f"curves_{LM_ENV}_heldout.png"
    plot_lm(df, png)
    evals = df.groupby(["algo", "seed"])["eval_toxic_rate"].count()
    parts = [f"## {LM_ENV}: held-out evaluation", "",
             f"{rounds} rounds per run; {int(evals.min())} evaluation rounds per run, each on "
             "the same held-out prompts with the same sampling seed for every run. Final: "
             f"evaluation rounds in the last {FINAL_FRACTION:.0%} of the run; AUC: all of "
             "them. Intervals: 95% stratified bootstrap (rliable); paired differences are "
             "per seed (algo minus PPO).", ""]
    parts += [f"- {n}" for n in notes]
    for metric in METRICS:
        rows, verdicts = metric_table(df, metric, rounds)
        parts += [f"### {metric.label}", "", markdown_table(METRIC_HEAD, rows), "",
                  *[f"{v}\n" for v in verdicts]]
    parts += ["### Time per round", "", markdown_table(TIMING_HEAD, timing_table(df)), "",
              f"![{LM_ENV} held-out]({png.name})", ""]
    return parts
