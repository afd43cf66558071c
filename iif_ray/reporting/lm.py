"""The LM sweeps' sections of ``report.md``: held-out metrics with rliable intervals, per task.

An LM sweep's ``rounds.csv`` carries the classic round row (its ``eval_return`` is the
held-out reward), which the report's generic table reads. What that record cannot carry is
the evaluation *detector*: the paper judges detoxification with a detector other than the
reward's, so an LM run's progress file records VADER's toxic rate on held-out prompts too. This
module reads every run's progress file (under the sweep's ``lm/`` directory) and states,
per metric, the IQM with its 95% stratified-bootstrap interval, P(algo better than PPO) and
the mean paired difference from PPO's same seed (both with intervals), and the verdict the
intervals support. Evaluation rounds sample from fixed held-out prompts with a fixed seed, so
every algorithm and seed is judged on the same prompts (common random numbers).

Runs are grouped by the task and reward noise their ``run.json`` names (a run without one is
detox-mini's, as sweeps wrote before tasks existed). arith's section reads its own metrics
(exact accuracy, no sampling) and, from the ledgers of the runs that score, how well the
scores find the records whose reward was flipped (:func:`flip_table`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from iif_ray.evaluation.flips import auroc, harmful_flips, precision_at_k
from iif_ray.ledger import read_ledger
from iif_ray.reporting import stats as st
from iif_ray.reporting.metrics import FINAL_FRACTION, run_scores
from iif_ray.reporting.rounds import LM_ENV, progress_table, run_name
from iif_ray.reporting.tables import COLORS, markdown_table, ordered_algos, pyplot
from iif_ray.run import LM, read_run_spec

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
TASK_METRICS = {
    "detox": METRICS,
    "arith": (
        Metric("eval_reward", "held-out exact accuracy: the policy's mean probability of the "
               "exact answer on the 500 held-out problems (teacher-forced, no sampling)",
               higher_is_better=True),
        Metric("eval_greedy", "held-out greedy exact accuracy (500 problems)",
               higher_is_better=True),
    ),
}
# Besides PPO: which algorithms each one is also judged against (does IIF beat the random
# control and the filter LM users already have, and does it add to that filter).
OTHER_BASELINES = {"iif": ("random", "group-filter"), "group-filter+iif": ("group-filter",)}


def run_tasks(runs_dir: Path) -> pd.DataFrame:
    """``algo, seed, task, noise`` of every run under ``runs_dir`` (from its ``run.json``;
    none: detox-mini, noise 0)."""
    rows = []
    for run in sorted(p for p in runs_dir.glob("*") if p.is_dir()):
        try:
            spec = read_run_spec(run, LM)
        except FileNotFoundError:
            spec = {}
        algo, _, seed = run.name.rpartition("-seed")
        rows.append({"algo": algo, "seed": int(seed) if seed.isdigit() else -1,
                     "task": spec.get("task", "detox"),
                     "noise": float(spec.get("reward_noise", 0.0))})
    return pd.DataFrame(rows, columns=["algo", "seed", "task", "noise"])


def task_title(task: str, noise: float) -> str:
    if task == "detox":
        return LM_ENV
    return f"{task}, {noise:.0%} of rewards flipped"


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
        for other in (o for o in OTHER_BASELINES.get(a, ()) if o in matrix):
            paired = sorted(set(scores[a]) & set(scores[other]))
            p_o = st.probability_of_improvement(sign * matrix[a][:, :1],
                                                sign * matrix[other][:, :1])
            d_o = st.mean(np.array([scores[a][s][0] - scores[other][s][0] for s in paired]))
            verdicts.append(_verdict(a, metric, [p_o], [d_o], baseline=other))
        rows.append([a, str(len(matrix[a])), f"{np.mean(matrix[a][:, 0]):.4g}",
                     iqm_final[a].fmt(1, 3), iqm_auc[a].fmt(1, 3), poi[0].fmt(), poi[1].fmt(),
                     delta[0].fmt(1, 3), delta[1].fmt(1, 3)])
    return rows, verdicts


def _verdict(algo: str, metric: Metric, poi: list[st.Estimate], delta: list[st.Estimate],
             baseline: str = "ppo") -> str:
    """The verdict the intervals support: P(improvement)'s interval above or below 0.5.
    ``poi``/``delta``: (final[, AUC])."""
    name = "IIF" if algo == "iif" else f"`{algo}`"
    other = "PPO" if baseline == "ppo" else f"`{baseline}`"
    better = "lower" if not metric.higher_is_better else "higher"
    answer = {1: "**yes**", -1: f"**no**: {other}'s is better",
              0: "**not resolved** at this precision"}
    text = (f"**Verdict ({algo} vs {baseline}, {metric.column}).** {name}'s {metric.column} "
            f"is {better} than {other}'s at the end of the run: {answer[poi[0].side(0.5)]} "
            f"(P = {poi[0].fmt()}, paired difference {delta[0].fmt(1, 3)})")
    if len(poi) > 1:
        text += (f"; over the whole run (AUC): {answer[poi[1].side(0.5)]} (P = "
                 f"{poi[1].fmt()}, paired difference {delta[1].fmt(1, 3)})")
    return text + "."


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


def plot_lm(df: pd.DataFrame, path: Path, metrics: tuple[Metric, ...] = METRICS,
            title: str = LM_ENV) -> None:
    """The held-out metrics against rounds: mean over seeds and its standard error."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(metrics), figsize=(11, 4))
    for ax, metric in zip(axes, metrics, strict=True):
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
    fig.suptitle(f"{title}: held-out evaluation, mean ± standard error over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


METRIC_HEAD = ["algo", "seeds", "final (mean)", "final IQM [95% CI]", "AUC IQM [95% CI]",
               "P(better than PPO) final", "P(better than PPO) AUC",
               "paired diff. from PPO, final", "paired diff. from PPO, AUC"]
TIMING_HEAD = ["algo", "s / round", "generate s", "scoring s", "update s",
               "scoring / update", "frac dropped"]


def lm_sections(directory: Path) -> list[str]:
    """Markdown for the LM runs under ``directory/lm`` (nothing when there are none), one
    section per task and reward noise."""
    df = progress_table(directory / LM_RUNS)
    if df.empty:
        return []
    df = df.merge(run_tasks(directory / LM_RUNS), on=["algo", "seed"], how="left")
    parts: list[str] = []
    for (task, noise), sub in df.groupby(["task", "noise"], sort=True):
        parts += task_section(directory, str(task), float(noise), sub)
    return parts


def task_section(directory: Path, task: str, noise: float, df: pd.DataFrame) -> list[str]:
    """One task's (and noise level's) held-out tables, verdicts, flips and timing."""
    df, rounds, notes = complete_runs(df)
    metrics = TASK_METRICS.get(task, METRICS)
    title = task_title(task, noise)
    slug = LM_ENV if task == "detox" else f"{task}-noise{round(100 * noise)}"
    png = directory / f"curves_{slug}_heldout.png"
    plot_lm(df, png, metrics, title)
    evals = df.groupby(["algo", "seed"])[metrics[0].column].count()
    same = ("the same held-out prompts with the same sampling seed for every run" if
            task == "detox" else "the same held-out problems, without sampling")
    parts = [f"## {title}: held-out evaluation", "",
             f"{rounds} rounds per run; {int(evals.min())} evaluation rounds per run, each on "
             f"{same}. Final: evaluation rounds in the last {FINAL_FRACTION:.0%} of the run; "
             "AUC: all of them. Intervals: 95% stratified bootstrap (rliable); paired "
             "differences are per seed (algo minus the baseline).", ""]
    parts += [f"- {n}" for n in notes]
    for metric in metrics:
        rows, verdicts = metric_table(df, metric, rounds)
        parts += [f"### {metric.label}", "", markdown_table(METRIC_HEAD, rows), "",
                  *[f"{v}\n" for v in verdicts]]
    flips = flip_table(directory / LM_RUNS, df) if noise > 0 else []
    if flips:
        parts += ["### Do the scores find the flipped rewards?", "", FLIP_NOTE, "",
                  markdown_table(FLIP_HEAD, flips), ""]
    parts += ["### Time per round", "", markdown_table(TIMING_HEAD, timing_table(df)), "",
              f"![{title} held-out]({png.name})", ""]
    return parts


FLIP_NOTE = (
    "A flipped reward is *harmful* when the record's group-relative advantage under it is "
    "non-zero and of another sign than under the clean reward (a right answer pushed down, "
    "a wrong one pushed up, including where the clean advantage is zero); a flip that "
    "leaves the sign, or leaves a zero advantage, is not counted. AUROC: of the negated "
    "score against harmful, per round over the scored records, averaged over rounds, then "
    "over seeds (95% bootstrap interval, rliable); precision@k: the share of harmful records "
    "among the k lowest scores, k = the round's harmful count; dropped: the share of "
    "harmful and of other scored records the selection dropped.")
FLIP_HEAD = ["algo", "seeds", "harmful / round", "AUROC [95% CI]", "precision@k [95% CI]",
             "harmful dropped", "other dropped"]


def ledger_harmful_flips(records: pd.DataFrame) -> np.ndarray:
    """``[n]`` bool: a round's harmful flips (:func:`~iif_ray.evaluation.flips.harmful_flips`)
    from its ledger rows; the clean advantage is GRPO's sign, the reward minus its group's
    mean under the clean rewards (corrupted 0/1 rewards flipped back)."""
    clean = np.where(records["corrupted"], 1.0 - records["reward"], records["reward"])
    frame = pd.DataFrame({"g": records["group"].to_numpy(), "clean": clean})
    clean_adv = clean - frame.groupby("g")["clean"].transform("mean").to_numpy()
    return harmful_flips(records["corrupted"].to_numpy(), clean_adv,
                         records["advantage"].to_numpy())


def run_flips(ledger_dir: Path) -> dict[str, float] | None:
    """One run's flip figures over its rounds (``None``: no ledger, or nothing scored)."""
    if not ledger_dir.is_dir():
        return None
    t = read_ledger(str(ledger_dir), columns=["iteration", "group", "reward", "advantage",
                                                "score", "kept", "corrupted"]).to_pandas()
    t = t[np.isfinite(t["score"])]
    if t.empty or not t["corrupted"].any():
        return None
    per_round = []
    for _, r in t.groupby("iteration"):
        harmful = ledger_harmful_flips(r)
        k = int(harmful.sum())
        if not k or k == len(r):
            continue
        scores, kept = r["score"].to_numpy(), r["kept"].to_numpy()
        per_round.append((k, auroc(harmful, -scores), precision_at_k(harmful, scores, k),
                          1 - kept[harmful].mean(), 1 - kept[~harmful].mean()))
    if not per_round:
        return None
    a = np.array(per_round)
    return dict(zip(("harmful", "auroc", "precision", "harmful_dropped", "other_dropped"),
                    a.mean(axis=0), strict=True))


def flip_table(runs_dir: Path, df: pd.DataFrame) -> list[list[str]]:
    """Per scoring algorithm: the flip figures over its seeds' runs (:func:`run_flips`)."""
    rows = []
    for a in ordered_algos(set(df.algo)):
        figs = [f for s in sorted(set(df[df.algo == a].seed))
                if (f := run_flips(runs_dir / run_name(a, int(s)) / "ledger")) is not None]
        if not figs:
            continue
        col = {k: np.array([f[k] for f in figs]) for k in figs[0]}
        rows.append([a, str(len(figs)), f"{col['harmful'].mean():.1f}",
                     st.mean(col["auroc"]).fmt(1, 3), st.mean(col["precision"]).fmt(1, 3),
                     f"{col['harmful_dropped'].mean():.3f}",
                     f"{col['other_dropped'].mean():.3f}"])
    return rows
