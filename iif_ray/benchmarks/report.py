"""The paper's sample-efficiency metrics, with intervals over seeds, as markdown and PNGs.

Definitions (paper §5.2, DESIGN §6), per environment and seed, comparing a method A with PPO:

* curves: evaluation return per round, smoothed by a trailing mean over ``SMOOTH`` rounds
  (evaluation uses few episodes per round on a 2-core machine, the paper used 1000);
* levels: ``LEVELS`` evenly spaced returns from PPO's first-round value up to PPO's peak
  (all reached by PPO by construction);
* ``m_A(v)``: first round whose smoothed return is >= v. A level A never reaches counts as
  round ``R + 1`` (R = rounds run), which understates A's cost, and is reported;
* ``reduction(v) = 1 - m_A(v) / m_PPO(v)``; ``SE_ave`` is its mean over the levels,
  ``SE_peak`` its value at PPO's peak;
* ``RT_peak = 1 - T_A(m_A(peak)) / T_PPO(R)``, with ``T`` the cumulative training wall-clock
  (sampling + scoring + update, evaluation excluded). This is the paper's arithmetic (Table 5:
  time for IIF to match PPO's peak over PPO's time for all rounds).

Seeds are paired by index; intervals are 95% Student-t over seeds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from iif_ray.benchmarks.records import load_rounds
from iif_ray.presets import PRESETS

SMOOTH = 3
LEVELS = 10
FINAL_ROUNDS = 5

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
          "advantage": "tab:green", "sb3-ppo": "tab:purple", "ppo-sb3init": "tab:brown"}


@dataclass(frozen=True)
class Interval:
    mean: float
    half: float
    n: int

    def fmt(self, scale: float = 1.0, digits: int = 1) -> str:
        if self.n == 0 or math.isnan(self.mean):
            return "-"
        if self.n == 1 or math.isnan(self.half):
            return f"{self.mean * scale:.{digits}f} (n=1)"
        return f"{self.mean * scale:.{digits}f} ± {self.half * scale:.{digits}f}"


def interval(values) -> Interval:
    """Mean and 95% Student-t half-width."""
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=float)
    if len(v) == 0:
        return Interval(math.nan, math.nan, 0)
    if len(v) == 1:
        return Interval(float(v[0]), math.nan, 1)
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return Interval(float(v.mean()), float(half), len(v))


def smoothed(curve: pd.Series) -> np.ndarray:
    return curve.rolling(SMOOTH, min_periods=1).mean().to_numpy()


def first_round(curve: np.ndarray, level: float) -> int:
    """1-based first round with ``curve >= level``; ``len(curve) + 1`` if never."""
    hits = np.flatnonzero(curve >= level)
    return int(hits[0]) + 1 if len(hits) else len(curve) + 1


@dataclass
class Efficiency:
    se_ave: float
    se_peak: float
    rt_peak: float
    reached_peak: bool


def efficiency(ppo: pd.DataFrame, other: pd.DataFrame) -> Efficiency:
    """Metrics of one seed's run of a method against the same seed's PPO run."""
    c_ppo = smoothed(ppo["eval_return"])
    c_oth = smoothed(other["eval_return"])
    start, peak = c_ppo[0], c_ppo.max()
    if peak <= start:  # PPO never improved: no levels to measure
        return Efficiency(math.nan, math.nan, math.nan, False)
    levels = start + (peak - start) * np.arange(1, LEVELS + 1) / LEVELS
    reductions = [1 - first_round(c_oth, v) / first_round(c_ppo, v) for v in levels]
    m_oth_peak = first_round(c_oth, peak)
    t_oth = np.cumsum(other["train_s"].to_numpy())
    t_ppo_total = float(ppo["train_s"].sum())
    reached = m_oth_peak <= len(c_oth)
    t_reach = t_oth[min(m_oth_peak, len(t_oth)) - 1]
    return Efficiency(float(np.mean(reductions)), float(reductions[-1]),
                      1 - t_reach / t_ppo_total, reached)


def _runs(df: pd.DataFrame, env: str, algo: str) -> dict[int, pd.DataFrame]:
    sub = df[(df.env == env) & (df.algo == algo)]
    return {int(s): g.sort_values("round") for s, g in sub.groupby("seed")}


def _final_return(run: pd.DataFrame) -> float:
    return float(run["eval_return"].tail(FINAL_ROUNDS).mean())


def _budget_note(df: pd.DataFrame, env: str) -> str | None:
    """Say so when the runs stop short of the preset's paper budget: their metrics describe
    the early part of learning only and are not comparable with the paper's figures."""
    preset = PRESETS.get(env)
    steps = int(df.loc[df.env == env, "env_steps"].max())
    if preset is None or steps >= preset.timesteps:
        return None
    whose, tail = (("paper's", ", not comparable with the paper's figures") if preset.in_paper
                   else ("preset's", " (not in the paper)"))
    return (f"**reduced budget**: {steps:,} of the {whose} {preset.timesteps:,} env steps "
            f"({steps / preset.timesteps:.0%}); early learning only{tail}")


def env_tables(df: pd.DataFrame, env: str) -> tuple[list[list[str]], list[str]]:
    """Rows of the per-environment table plus notes (censoring, missing PPO)."""
    notes: list[str] = []
    budget_note = _budget_note(df, env)
    if budget_note:
        notes.append(budget_note)
    ppo = _runs(df, env, "ppo")
    algos = [a for a in ALGO_ORDER if a in set(df[df.env == env].algo)]
    algos += sorted(set(df[df.env == env].algo) - set(algos))
    rows = []
    for algo in algos:
        runs = _runs(df, env, algo)
        final = interval([_final_return(r) for r in runs.values()])
        round_s = interval([r["train_s"].mean() for r in runs.values()])
        dropped = interval([r["frac_dropped"].mean() for r in runs.values()])
        rounds = int(np.median([len(r) for r in runs.values()]))
        effs = [efficiency(ppo[s], r) for s, r in runs.items() if s in ppo] \
            if algo != "ppo" else []
        se_ave = interval([e.se_ave for e in effs])
        se_peak = interval([e.se_peak for e in effs])
        rt = interval([e.rt_peak for e in effs])
        missed = sum(not e.reached_peak for e in effs)
        if missed:
            notes.append(f"{algo}: {missed} of {len(effs)} seeds never reached PPO's peak "
                         "(counted as round R+1)")
        paper = PAPER.get(env, {}) if algo == "iif" else {}
        rows.append([
            algo, str(len(runs)), str(rounds), final.fmt(), round_s.fmt(digits=2),
            dropped.fmt(digits=3),
            "-" if algo == "ppo" else se_ave.fmt(100), "-" if algo == "ppo" else se_peak.fmt(100),
            "-" if algo == "ppo" else rt.fmt(100),
            " / ".join(paper.get(k, "-") for k in ("SE_ave", "SE_peak", "RT_peak")) if paper
            else "",
        ])
    if not ppo:
        notes.append("no PPO runs: efficiency metrics need PPO as the reference")
    return rows, notes


TABLE_HEAD = ["algo", "seeds", "rounds", "final return", "train s/round", "frac dropped",
              "SE_ave %", "SE_peak %", "RT_peak %", "paper SE_ave / SE_peak / RT_peak %"]


def markdown_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def plot_env(df: pd.DataFrame, env: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for algo in [a for a in ALGO_ORDER if a in set(df[df.env == env].algo)]:
        runs = _runs(df, env, algo)
        n = min(len(r) for r in runs.values())
        curves = np.stack([smoothed(r["eval_return"])[:n] for r in runs.values()])
        steps = next(iter(runs.values()))["env_steps"].to_numpy()[:n]
        clock = np.mean([np.cumsum(r["train_s"].to_numpy()[:n]) for r in runs.values()], 0)
        mean = curves.mean(0)
        if len(curves) > 1:
            half = stats.t.ppf(0.975, len(curves) - 1) * curves.std(0, ddof=1) / np.sqrt(
                len(curves))
        else:
            half = np.zeros_like(mean)
        for ax, x in ((axes[0], steps), (axes[1], clock)):
            ax.plot(x, mean, label=f"{algo} (n={len(curves)})", color=COLORS.get(algo))
            ax.fill_between(x, mean - half, mean + half, alpha=0.2, color=COLORS.get(algo))
    axes[0].set_xlabel("env steps")
    axes[1].set_xlabel("training wall-clock, s (evaluation excluded)")
    for ax in axes:
        ax.set_ylabel(f"eval return (stochastic, trailing mean of {SMOOTH})")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{env}: mean and 95% interval over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sb3_section(df: pd.DataFrame) -> str:
    envs = sorted(set(df[df.algo == "sb3-ppo"].env))
    if not envs:
        return ""
    rows = []
    for env in envs:
        ours, theirs = _runs(df, env, "ppo"), _runs(df, env, "sb3-ppo")
        if not ours:
            continue
        fo = interval([_final_return(r) for r in ours.values()])
        ft = interval([_final_return(r) for r in theirs.values()])
        so = interval([r["train_s"].mean() for r in ours.values()])
        st = interval([r["train_s"].mean() for r in theirs.values()])
        rows.append([env, fo.fmt(), ft.fmt(), so.fmt(digits=2), st.fmt(digits=2)])
    head = ["env", "our PPO final return", "SB3 PPO final return", "our s/round (sweep)",
            "SB3 s/round (sweep)"]
    return ("## Baseline check: our PPO vs Stable-Baselines3 PPO\n\n"
            "Same hyperparameters, budget, seed count and evaluation episodes per round "
            "(stochastic policy; ours runs them on parallel evaluation envs and keeps the "
            "first ones to finish, SB3 one after another). Seconds per "
            "round exclude evaluation. They come from sweep trials that shared the machine "
            "with different numbers of other trials, so they are not a speed comparison "
            "and no ratio is taken from them; the side-by-side timing below (when present) "
            "is.\n\n"
            + markdown_table(head, rows) + "\n")


BENCH_SB3 = "bench_sb3.txt"


def bench_section(directory: Path) -> str:
    """The committed output of ``iif-ray bench sb3``: round times measured alternately in one
    process, the figure to quote (sweep trials share the machine, their times do not)."""
    path = directory / BENCH_SB3
    if not path.exists():
        return ""
    return ("### Round time side by side (`iif-ray bench sb3`)\n\n"
            f"Output of the command in `{BENCH_SB3}`, ours and SB3 alternating round by round "
            "in one process:\n\n```\n" + path.read_text().strip() + "\n```\n")


def write_report(directory: str | Path) -> Path:
    """Write ``report.md`` and ``curves_<env>.png`` into ``directory`` from its rounds CSVs."""
    directory = Path(directory)
    df = load_rounds(directory)
    parts = [
        "# IIF vs PPO: sample efficiency and wall-clock",
        "",
        "Regenerate with `iif-ray report " + directory.name + "` from the committed "
        "`*rounds*.csv` files. Metric definitions: `iif_ray/benchmarks/report.py`. "
        "Intervals are 95% Student-t over seeds (paired by seed index). Final return: mean "
        f"evaluation return of the last {FINAL_ROUNDS} rounds. Paper figures: Hu et al. 2025, "
        "Fig. 6(b), 5 seeds.",
        "",
    ]
    for env in sorted(set(df.env)):
        rows, notes = env_tables(df, env)
        png = directory / f"curves_{env}.png"
        plot_env(df, env, png)
        parts += [f"## {env}", "", markdown_table(TABLE_HEAD, rows), ""]
        parts += [f"- {n}" for n in notes]
        parts += ["", f"![{env}]({png.name})", ""]
    parts.append(sb3_section(df))
    parts.append(bench_section(directory))
    path = directory / "report.md"
    path.write_text("\n".join(parts))
    return path
