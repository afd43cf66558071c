"""The report's evidence sections: runs evaluated from snapshots (``evals.csv``), one table,
verdict and curve figure per environment, the ablation views, and the aggregate over
environments, every interval through rliable (:mod:`iif_ray.reporting.stats`).
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd

from iif_ray.presets import PRESETS
from iif_ray.reporting import stats as st
from iif_ray.reporting.ablation import p_sensitivity_section, protocol_section
from iif_ray.reporting.metrics import (
    FINAL_FRACTION,
    REACH_TOL,
    paired_efficiency,
    reach_tolerance,
    run_scores,
)
from iif_ray.reporting.rounds import EVALS_CSV, RUN_KEYS, load_rounds, read_evals
from iif_ray.reporting.tables import (
    ALGO_ORDER,
    COLORS,
    curve,
    finish_curves,
    markdown_table,
    ordered_algos,
    paper_figures,
    pyplot,
    runs_of,
)


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
    scores, seeds, raw = {}, {}, {}
    for a in algos:
        seeds[a] = sorted(runs[a])
        raw[a] = np.array([run_scores(runs[a][s]) for s in seeds[a]])  # (final, auc) per seed
        scores[a] = st.normalise(raw[a], rr)
    iqm_final = st.iqm({a: scores[a][:, :1] for a in algos})
    iqm_auc = st.iqm({a: scores[a][:, 1:] for a in algos})
    rows, verdicts, notes = [], [], []
    for a in algos:
        ref = reference(a, present)
        raw_final = raw[a][:, 0]
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
        rows.append([
            a, ref or "-", str(len(seeds[a])), f"{np.mean(raw_final):.3g}", iqm_final[a].fmt(),
            iqm_auc[a].fmt(), poi_f.fmt(), poi_a.fmt(), se_ave.fmt(100, 1),
            se_peak.fmt(100, 1), rt_peak.fmt(100, 1), f"{dropped:.3f}",
            paper_figures(env, a),
        ])
        if ref is not None and a.startswith("iif"):
            ref_final = np.mean(raw[ref][:, 0])
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
    fig, axes = pyplot().subplots(1, 2, figsize=(11, 4))
    for algo in ordered_algos(set(df[df.env == env].algo)):
        sub = df[(df.env == env) & (df.algo == algo)]
        by_round = sub.groupby("round")
        x_steps = by_round["env_steps"].mean().to_numpy()
        x_clock = by_round["clock_s"].mean().to_numpy()
        mean = by_round["eval_return"].mean().to_numpy()
        se = by_round["eval_return"].sem().fillna(0).to_numpy()
        curve(axes, (x_steps, x_clock), mean, se, algo, sub.seed.nunique())
    finish_curves(fig, axes, "expected return (exact or paired MC)",
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
    plt = pyplot()
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
    """Markdown for every environment with evaluated snapshots, plus the aggregate.

    Each environment's main table and its two ablation views are independent until the
    aggregate, and each costs many bootstraps, so they are computed in parallel processes where
    the machine has more than one core; every interval seeds its own bootstrap, so the report
    is the same either way.
    """
    df = evaluated_rounds(directory)
    if df.empty:
        return [], set()
    envs = sorted(set(df.env))
    frames = {env: _env_frame(df, env) for env in envs}
    # The bootstrap settings travel with each job: a spawned process has only the defaults.
    jobs = [(frames[env], env, part, directory, (st.REPS, st.SEED))
            for env in envs for part in SECTION_PARTS]
    workers = min(len(envs), len(os.sched_getaffinity(0)))
    if workers > 1:
        # spawn: a fresh interpreter, whatever threads the calling process runs.
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            done = list(pool.map(_section_part, *zip(*jobs, strict=True)))
    else:
        done = [_section_part(*job) for job in jobs]
    found = [ev for ev, _ in done if ev is not None]
    parts = [line for _, part_lines in done for line in part_lines]
    parts += aggregate_evidence(found, directory)
    return parts, {e.env for e in found}


SECTION_PARTS = ("main", "protocol", "p")


def _env_frame(df: pd.DataFrame, env: str) -> pd.DataFrame:
    """``env``'s rows, with the off-grid counts the notes read."""
    frame = df[df.env == env].copy()
    frame.attrs = dict(df.attrs)
    return frame


def _section_part(df: pd.DataFrame, env: str, part: str, directory: Path,
                  bootstrap: tuple[int, int]) -> tuple[EnvEvidence | None, list[str]]:
    """One part of an environment's section: the main table with its notes, verdicts and
    curve figure (``main``, which also returns the evidence the aggregate reads), or one of
    the two ablation views."""
    st.REPS, st.SEED = bootstrap
    with st.memoised():
        if part == "protocol":
            return None, protocol_section(df, env)
        if part == "p":
            return None, p_sensitivity_section(df, env)
        ev = env_evidence(df, env)
        png = directory / f"curves_{env}.png"
        plot_evidence(df, env, png)
    parts = [f"## {env}", "", markdown_table(EVIDENCE_HEAD, ev.rows), "", f"- {ev.precision}"]
    parts += [f"- {n}" for n in ev.notes]
    parts += ["", *[f"{v}\n" for v in ev.verdicts], f"![{env}]({png.name})", ""]
    return ev, parts


EVIDENCE_INTRO = (
    "Environments evaluated from policy snapshots (`evals.csv`, written by `iif-ray "
    "evaluate`): exact expected return where the MDP is finite, otherwise paired Monte-Carlo "
    "on one shared seed list. Statistics through rliable: IQM of normalised scores and "
    "P(algo > PPO) with 95% stratified-bootstrap intervals over runs; SE_ave / SE_peak / "
    f"RT_peak per seed against PPO's same seed, mean with bootstrap interval. A level counts "
    f"as reached within {REACH_TOL:.0%} of the return range. Final: rounds in the last "
    f"{FINAL_FRACTION:.0%} of the run; AUC: all rounds.")
