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

Seeds are paired by index; intervals are rliable's 95% bootstrap of the mean over seeds
(:func:`statistics.mean`, which leaves out a seed's missing value), as everywhere else
in the report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from iif_ray.benchmarks import statistics as st
from iif_ray.benchmarks.records import EVALS_CSV, RUN_KEYS, load_rounds, read_evals
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


def ordered_algos(present: set[str]) -> list[str]:
    """The report's algorithm order: the known ones first (PPO leads), then the rest."""
    return [a for a in ALGO_ORDER if a in present] + sorted(present - set(ALGO_ORDER))


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
    """Metrics of one seed's run of a method against the same seed's PPO run.

    Only rounds with an evaluation count (an LM run evaluates every few rounds): curves are
    smoothed over evaluations, and a level is reached in the round of the first evaluation
    at or above it.
    """
    ev_ppo = ppo.dropna(subset=["eval_return"])
    ev_oth = other.dropna(subset=["eval_return"])
    if ev_ppo.empty or ev_oth.empty:
        return Efficiency(math.nan, math.nan, math.nan, False)
    c_ppo, c_oth = smoothed(ev_ppo["eval_return"]), smoothed(ev_oth["eval_return"])
    rounds_ppo, rounds_oth = ev_ppo["round"].to_numpy(), ev_oth["round"].to_numpy()
    never = int(other["round"].max()) + 1

    def reach(curve: np.ndarray, rounds: np.ndarray, level: float) -> int:
        i = first_round(curve, level) - 1
        return int(rounds[i]) if i < len(rounds) else never

    start, peak = c_ppo[0], c_ppo.max()
    if peak <= start:  # PPO never improved: no levels to measure
        return Efficiency(math.nan, math.nan, math.nan, False)
    levels = start + (peak - start) * np.arange(1, LEVELS + 1) / LEVELS
    reductions = [1 - reach(c_oth, rounds_oth, v) / reach(c_ppo, rounds_ppo, v)
                  for v in levels]
    m_oth_peak = reach(c_oth, rounds_oth, peak)
    clock = other.set_index("round")["train_s"].cumsum()
    reached = m_oth_peak < never
    t_reach = float(clock.loc[m_oth_peak]) if reached else float(clock.iloc[-1])
    return Efficiency(float(np.mean(reductions)), float(reductions[-1]),
                      1 - t_reach / float(ppo["train_s"].sum()), reached)


def runs_of(df: pd.DataFrame, env: str, algo: str) -> dict[int, pd.DataFrame]:
    """Seed -> that run's rows of ``env`` and ``algo``, in round order."""
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
    ppo = runs_of(df, env, "ppo")
    algos = ordered_algos(set(df[df.env == env].algo))
    rows = []
    for algo in algos:
        runs = runs_of(df, env, algo)
        final = st.mean([_final_return(r) for r in runs.values()])
        round_s = st.mean([r["train_s"].mean() for r in runs.values()])
        dropped = st.mean([r["frac_dropped"].mean() for r in runs.values()])
        rounds = int(np.median([len(r) for r in runs.values()]))
        effs = [efficiency(ppo[s], r) for s, r in runs.items() if s in ppo] \
            if algo != "ppo" else []
        se_ave = st.mean([e.se_ave for e in effs])
        se_peak = st.mean([e.se_peak for e in effs])
        rt = st.mean([e.rt_peak for e in effs])
        missed = sum(not e.reached_peak for e in effs)
        if missed:
            notes.append(f"{algo}: {missed} of {len(effs)} seeds never reached PPO's peak "
                         "(counted as round R+1)")
        paper = PAPER.get(env, {}) if algo == "iif" else {}
        rows.append([
            algo, str(len(runs)), str(rounds), final.fmt(digits=1), round_s.fmt(digits=2),
            dropped.fmt(digits=3),
            "-" if algo == "ppo" else se_ave.fmt(100, 1),
            "-" if algo == "ppo" else se_peak.fmt(100, 1),
            "-" if algo == "ppo" else rt.fmt(100, 1),
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


def _curve(axes, xs, mean, band, algo: str, n: int) -> None:
    """One algorithm's curve against env steps and against wall-clock, with its band."""
    for ax, x in zip(axes, xs, strict=True):
        ax.plot(x, mean, label=f"{algo} (n={n})", color=COLORS.get(algo))
        ax.fill_between(x, mean - band, mean + band, alpha=0.2, color=COLORS.get(algo))


def _finish_curves(fig, axes, ylabel: str, title: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    axes[0].set_xlabel("env steps")
    axes[1].set_xlabel("training wall-clock, s (evaluation excluded)")
    for ax in axes:
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_env(df: pd.DataFrame, env: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for algo in [a for a in ALGO_ORDER if a in set(df[df.env == env].algo)]:
        runs = runs_of(df, env, algo)
        n = min(len(r) for r in runs.values())
        curves = np.stack([smoothed(r["eval_return"])[:n] for r in runs.values()])
        steps = next(iter(runs.values()))["env_steps"].to_numpy()[:n]
        clock = np.mean([np.cumsum(r["train_s"].to_numpy()[:n]) for r in runs.values()], 0)
        mean = curves.mean(0)
        # A descriptive band, as in the evidence curves: the intervals are in the tables.
        se = (curves.std(0, ddof=1) / np.sqrt(len(curves)) if len(curves) > 1
              else np.zeros_like(mean))
        _curve(axes, (steps, clock), mean, se, algo, len(curves))
    _finish_curves(fig, axes, f"eval return (stochastic, trailing mean of {SMOOTH})",
                   f"{env}: mean ± standard error over seeds", path)


def sb3_section(df: pd.DataFrame) -> str:
    envs = sorted(set(df[df.algo == "sb3-ppo"].env))
    if not envs:
        return ""
    rows = []
    for env in envs:
        ours, theirs = runs_of(df, env, "ppo"), runs_of(df, env, "sb3-ppo")
        if not ours:
            continue
        fo = st.mean([_final_return(r) for r in ours.values()])
        ft = st.mean([_final_return(r) for r in theirs.values()])
        so = st.mean([r["train_s"].mean() for r in ours.values()])
        theirs_s = st.mean([r["train_s"].mean() for r in theirs.values()])
        rows.append([env, fo.fmt(digits=1), ft.fmt(digits=1), so.fmt(digits=2),
                     theirs_s.fmt(digits=2)])
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


# --- Evidence: runs evaluated from snapshots (``evals.csv``), statistics through rliable ---

FINAL_FRACTION = 0.1  # "final": evaluation points in the last 10% of a run's rounds
REACH_TOL = 0.01  # a level counts as reached within 1% of the return range


def evaluated_rounds(directory: Path) -> pd.DataFrame:
    """``evals.csv`` joined with each round's cumulative training clock and env steps.

    Round 0 (the initial policy) has clock 0 and no env steps.
    """
    evals = read_evals(directory / EVALS_CSV)
    if evals.empty:
        return evals
    rounds = load_rounds(directory).sort_values(list(RUN_KEYS))
    rounds["clock_s"] = rounds.groupby(["env", "algo", "seed"])["train_s"].cumsum()
    cols = [*RUN_KEYS, "clock_s", "env_steps", "frac_dropped"]
    df = evals.merge(rounds[cols], on=list(RUN_KEYS), how="left")
    first = df["round"] == 0
    df.loc[first, ["clock_s", "env_steps", "frac_dropped"]] = 0.0
    df = df.dropna(subset=["eval_return", "clock_s"]).sort_values(list(RUN_KEYS))
    keep = on_common_grid(df)
    off_grid = df[~keep].groupby("env").size().to_dict()
    df = df[keep].copy()
    df.attrs["off_grid"] = off_grid
    return df


def on_common_grid(df: pd.DataFrame) -> pd.Series:
    """Which evaluation points lie on their environment's common grid: a round is kept when
    every run of the environment that got that far was evaluated there.

    Paired metrics and mean curves need the same rounds in every run: a point off the grid
    (say the last snapshot of a run evaluated while it was still training) would let that
    run reach a level a few rounds earlier, and make a mean curve average other seeds there.
    """
    keep = pd.Series(True, index=df.index)
    for _, env_df in df.groupby("env"):
        runs = env_df.groupby(["algo", "seed"])["round"]
        reached, evaluated = runs.max(), runs.apply(set)
        for r in set(env_df["round"]):
            if any(reached[k] >= r and r not in evaluated[k] for k in reached.index):
                keep[env_df.index[env_df["round"] == r]] = False
    return keep


def reach_tolerance(env: str) -> float:
    """How close to a level counts as reaching it: REACH_TOL of the preset's return range."""
    rr = PRESETS[env].return_range if env in PRESETS else None
    return REACH_TOL * (rr[1] - rr[0]) if rr else 0.0


def _first_reach(run: pd.DataFrame, level: float, tol: float) -> int | None:
    hit = run[(run["round"] >= 1) & (run["eval_return"] >= level - tol)]
    return int(hit["round"].iloc[0]) if len(hit) else None


def paired_efficiency(ppo: pd.DataFrame, other: pd.DataFrame, tol: float) -> Efficiency:
    """The paper's SE_ave, SE_peak and RT_peak of one seed's run against PPO's same seed.

    Levels run from PPO's initial value to its peak; a level counts as reached within
    ``tol``; a level never reached counts as round R + 1.
    """
    start = float(ppo["eval_return"].iloc[0])
    peak = float(ppo.loc[ppo["round"] >= 1, "eval_return"].max())
    if peak - start <= tol:
        return Efficiency(math.nan, math.nan, math.nan, False)
    budget = int(other["round"].max())
    levels = start + (peak - start) * np.arange(1, LEVELS + 1) / LEVELS
    reductions = []
    for v in levels:
        m_ppo = _first_reach(ppo, v, tol)
        m_oth = _first_reach(other, v, tol)
        reductions.append(1 - (m_oth if m_oth is not None else budget + 1) / m_ppo)
    m_peak = _first_reach(other, peak, tol)
    t_reach = (float(other.loc[other["round"] == m_peak, "clock_s"].iloc[0])
               if m_peak is not None else float(other["clock_s"].max()))
    return Efficiency(float(np.mean(reductions)), float(reductions[-1]),
                      1 - t_reach / float(ppo["clock_s"].max()), m_peak is not None)


def run_scores(run: pd.DataFrame) -> tuple[float, float]:
    """(final, auc): mean return over the last 10% of rounds, and over all rounds >= 1."""
    trained = run[run["round"] >= 1]
    last = int(trained["round"].max())
    final = trained[trained["round"] > last * (1 - FINAL_FRACTION)]
    return float(final["eval_return"].mean()), float(trained["eval_return"].mean())


@dataclass
class EnvEvidence:
    """Everything the report says about one environment's evaluated runs."""

    env: str
    scores: dict[str, np.ndarray]  # algo -> (runs, 2) normalised [final, auc]
    seeds: dict[str, list[int]]
    rows: list[list[str]]
    verdicts: list[str]
    precision: str
    notes: list[str]


def reference(algo: str, present: set[str]) -> str | None:
    """What ``algo`` is compared with: PPO of the same variant cell (``iif-restart`` against
    ``ppo-restart``) when it was run, else plain PPO; a PPO variant against plain PPO."""
    if algo == "ppo":
        return None
    base, _, suffix = algo.partition("-")
    if base != "ppo" and suffix and f"ppo-{suffix}" in present:
        return f"ppo-{suffix}"
    return "ppo" if "ppo" in present else None


def env_evidence(df: pd.DataFrame, env: str) -> EnvEvidence:
    rr = PRESETS[env].return_range if env in PRESETS else None
    tol = reach_tolerance(env)
    present = set(df[df.env == env].algo)
    algos = ordered_algos(present)
    runs = {a: runs_of(df, env, a) for a in algos}
    scores, seeds = {}, {}
    for a in algos:
        seeds[a] = sorted(runs[a])
        raw = np.array([run_scores(runs[a][s]) for s in seeds[a]])
        scores[a] = st.normalise(raw, rr)
    iqm_final = st.iqm({a: scores[a][:, :1] for a in algos})
    iqm_auc = st.iqm({a: scores[a][:, 1:] for a in algos})
    rows, verdicts, notes = [], [], []
    for a in algos:
        ref = reference(a, present)
        raw_final = np.array([run_scores(runs[a][s])[0] for s in seeds[a]])
        effs, poi_f, poi_a = [], st.NAN, st.NAN
        if ref is not None:
            effs = [paired_efficiency(runs[ref][s], runs[a][s], tol)
                    for s in seeds[a] if s in runs[ref]]
            poi_f = st.probability_of_improvement(scores[a][:, :1], scores[ref][:, :1])
            poi_a = st.probability_of_improvement(scores[a][:, 1:], scores[ref][:, 1:])
        se_ave = st.mean(np.array([e.se_ave for e in effs]))
        se_peak = st.mean(np.array([e.se_peak for e in effs]))
        rt_peak = st.mean(np.array([e.rt_peak for e in effs]))
        missed = sum(not e.reached_peak for e in effs)
        if missed:
            notes.append(f"{a}: {missed} of {len(effs)} seeds never reached {ref}'s peak "
                         "(counted as round R+1)")
        dropped = np.mean([r["frac_dropped"][r["round"] >= 1].mean() for r in runs[a].values()])
        paper = PAPER.get(env, {}) if a == "iif" else {}
        rows.append([
            a, ref or "-", str(len(seeds[a])), f"{np.mean(raw_final):.3g}", iqm_final[a].fmt(),
            iqm_auc[a].fmt(), poi_f.fmt(), poi_a.fmt(), se_ave.fmt(100, 1),
            se_peak.fmt(100, 1), rt_peak.fmt(100, 1), f"{dropped:.3f}",
            " / ".join(paper.get(k, "-") for k in ("SE_ave", "SE_peak", "RT_peak"))
            if paper else "",
        ])
        if ref is not None and a.startswith("iif"):
            ref_final = np.mean([run_scores(runs[ref][s])[0] for s in seeds[ref]])
            verdicts += _verdicts(a, ref, se_peak, poi_f, poi_a,
                                  (float(np.mean(raw_final)), float(ref_final)))
    sub = df[(df.env == env) & (df["round"] >= 1)]
    off_grid = df.attrs.get("off_grid", {}).get(env, 0)
    if off_grid:
        notes.append(f"{off_grid} evaluation point(s) off the common round grid left out "
                     "(see `on_common_grid`)")
    width = (rr[1] - rr[0]) if rr else math.nan
    methods = ", ".join(sorted(set(sub.eval_method)))
    precision = (f"evaluation: {methods}; {len(sub)} points; standard error per point "
                 f"mean {sub.eval_se.mean():.3g}, max {sub.eval_se.max():.3g} "
                 f"({sub.eval_se.max() / width:.1%} of the return range {rr}); "
                 f"episodes per point {sub.eval_episodes.min():.0f}-"
                 f"{sub.eval_episodes.max():.0f} (0: exact); evaluation seconds "
                 f"{sub.eval_s.sum():.0f} in all, none counted in RT")
    return EnvEvidence(env, scores, seeds, rows, verdicts, precision, notes)


def _verdicts(algo: str, ref: str, se_peak: st.Estimate, poi_final: st.Estimate,
              poi_auc: st.Estimate, finals: tuple[float, float]) -> list[str]:
    """The sentences the intervals support, for ``algo`` against ``ref``."""
    plain = algo == "iif" and ref == "ppo"
    a, r = ("IIF", "PPO") if plain else (f"`{algo}`", f"`{ref}`")
    reach = {1: "**yes**", -1: "**no** (it needs more)", 0: "**not resolved** at this precision"}
    beat = {1: "**yes**", -1: f"**no**: {r} is better",
            0: "**not resolved** at this precision"}
    return [
        f"**Verdict{'' if plain else f' ({algo})'}.** {a} reaches {r}'s peak in fewer rounds: "
        f"{reach[se_peak.side(0.0)]} (SE_peak {se_peak.fmt(100, 1)} %). "
        f"{a}'s final return beats {r}'s at 95% confidence: {beat[poi_final.side(0.5)]} "
        f"(P({a} > {r}) = {poi_final.fmt()}; mean final return {finals[0]:.4g} against "
        f"{finals[1]:.4g}); over the whole run (AUC): "
        f"{beat[poi_auc.side(0.5)]} (P = {poi_auc.fmt()}).",
    ]


EVIDENCE_HEAD = ["algo", "vs", "seeds", "final return (mean)", "final IQM [95% CI]",
                 "AUC IQM [95% CI]", "P(algo > vs) final", "P(algo > vs) AUC",
                 "SE_ave %", "SE_peak %", "RT_peak %", "frac dropped",
                 "paper SE_ave / SE_peak / RT_peak %"]


def plot_evidence(df: pd.DataFrame, env: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for algo in ordered_algos(set(df[df.env == env].algo)):
        sub = df[(df.env == env) & (df.algo == algo)]
        by_round = sub.groupby("round")
        x_steps = by_round["env_steps"].mean().to_numpy()
        x_clock = by_round["clock_s"].mean().to_numpy()
        mean = by_round["eval_return"].mean().to_numpy()
        se = by_round["eval_return"].sem().fillna(0).to_numpy()
        _curve(axes, (x_steps, x_clock), mean, se, algo, sub.seed.nunique())
    _finish_curves(fig, axes, "expected return (exact or paired MC)",
                   f"{env}: mean ± standard error over seeds", path)


def aggregate_evidence(found: list[EnvEvidence], directory: Path) -> list[str]:
    """IQM and P(IIF > PPO) over environments (normalised scores), and performance profiles."""
    complete = [e for e in found if {"ppo", "iif"} <= set(e.scores)]
    if len(complete) < 2:
        return []
    algos = [a for a in ALGO_ORDER if all(a in e.scores for e in complete)]
    matrices = {}
    for a in algos:
        n = min(len(e.seeds[a]) for e in complete)
        matrices[a] = np.stack([e.scores[a][:n] for e in complete], axis=1)  # runs x tasks x 2
    envs = ", ".join(e.env for e in complete)
    final_iqm = st.iqm({a: m[..., 0] for a, m in matrices.items()})
    auc_iqm = st.iqm({a: m[..., 1] for a, m in matrices.items()})
    rows = []
    for a in algos:
        poi = (st.probability_of_improvement(matrices[a][..., 0], matrices["ppo"][..., 0])
               if a != "ppo" else st.NAN)
        rows.append([a, str(matrices[a].shape[0]), final_iqm[a].fmt(), auc_iqm[a].fmt(),
                     poi.fmt()])
    taus = np.linspace(0, 1.05, 43)
    profiles, bands = st.performance_profiles({a: m[..., 0] for a, m in matrices.items()},
                                              taus)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for a in algos:
        ax.plot(taus, profiles[a], label=a, color=COLORS.get(a))
        ax.fill_between(taus, bands[a][0], bands[a][1], alpha=0.2, color=COLORS.get(a))
    ax.set_xlabel("normalised final score tau")
    ax.set_ylabel("fraction of runs with score > tau")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(directory / "profile_final.png", dpi=110)
    plt.close(fig)
    head = ["algo", "runs per env", "final IQM [95% CI]", "AUC IQM [95% CI]",
            "P(algo > PPO) final"]
    return ["## All environments (normalised scores)", "",
            f"Environments: {envs}. Scores normalised by each preset's return range.", "",
            markdown_table(head, rows), "", "![performance profile](profile_final.png)", ""]


def evidence_sections(directory: Path) -> tuple[list[str], set[str]]:
    """Markdown for every environment with evaluated snapshots, plus the aggregate."""
    # Imported here: the ablation views build on this module's paired metrics.
    from iif_ray.benchmarks.ablation_report import p_sensitivity_section, protocol_section

    df = evaluated_rounds(directory)
    if df.empty:
        return [], set()
    parts, found = [], []
    for env in sorted(set(df.env)):
        ev = env_evidence(df, env)
        found.append(ev)
        png = directory / f"curves_{env}.png"
        plot_evidence(df, env, png)
        parts += [f"## {env}", "", markdown_table(EVIDENCE_HEAD, ev.rows), "",
                  f"- {ev.precision}"]
        parts += [f"- {n}" for n in ev.notes]
        parts += ["", *[f"{v}\n" for v in ev.verdicts], f"![{env}]({png.name})", ""]
        parts += protocol_section(df, env) + p_sensitivity_section(df, env)
    parts += aggregate_evidence(found, directory)
    return parts, {e.env for e in found}


EVIDENCE_INTRO = (
    "Environments evaluated from policy snapshots (`evals.csv`, written by `iif-ray "
    "evaluate`): exact expected return where the MDP is finite, otherwise paired Monte-Carlo "
    "on one shared seed list. Statistics through rliable: IQM of normalised scores and "
    "P(algo > PPO) with 95% stratified-bootstrap intervals over runs; SE_ave / SE_peak / "
    f"RT_peak per seed against PPO's same seed, mean with bootstrap interval. A level counts "
    f"as reached within {REACH_TOL:.0%} of the return range. Final: rounds in the last "
    f"{FINAL_FRACTION:.0%} of the run; AUC: all rounds.")


def write_report(directory: str | Path) -> Path:
    """Write ``report.md`` and ``curves_<env>.png`` into ``directory`` from its rounds CSVs."""
    directory = Path(directory)
    df = load_rounds(directory)
    evidence, evaluated = evidence_sections(directory)
    parts = [
        "# IIF vs PPO: sample efficiency and wall-clock",
        "",
        "Regenerate with `iif-ray report " + str(directory) + "` from the committed "
        "`*rounds*.csv` (and `evals.csv`, and an LM sweep's `lm/*/lm_progress.csv`) files. "
        "Metric definitions: "
        "`iif_ray/benchmarks/report.py`. In tables of in-training evaluations (no "
        "`evals.csv` rows), intervals are rliable's 95% bootstrap of the mean over seeds "
        "(paired by seed index; over 3-5 seeds a bootstrap covers less than it claims, so "
        "read them as a spread, not a test) "
        "and the final return is the mean "
        f"evaluation return of the last {FINAL_ROUNDS} rounds. Paper figures: Hu et al. 2025, "
        "Fig. 6(b), 5 seeds.",
        "",
    ]
    if evidence:
        parts += [EVIDENCE_INTRO, "", *evidence]
    for env in sorted(set(df.env) - evaluated):
        rows, notes = env_tables(df, env)
        png = directory / f"curves_{env}.png"
        plot_env(df, env, png)
        parts += [f"## {env}", "", markdown_table(TABLE_HEAD, rows), ""]
        parts += [f"- {n}" for n in notes]
        parts += ["", f"![{env}]({png.name})", ""]
    # Imported here: the LM section builds on this module's tables and constants.
    from iif_ray.benchmarks.lm_report import lm_sections

    parts += lm_sections(directory)
    parts.append(sb3_section(df))
    parts.append(bench_section(directory))
    path = directory / "report.md"
    path.write_text("\n".join(parts))
    return path
