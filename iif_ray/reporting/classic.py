"""The report's tables of in-training evaluations: runs without ``evals.csv`` rows (the
committed ``results/report.md``, an LM sweep's in-training rows), and the Stable-Baselines3
baseline check.

Each environment gets one table (final return, seconds per round, fraction dropped, and the
paper's efficiency metrics against PPO, :mod:`iif_ray.reporting.metrics`) and one curve figure.
Intervals are rliable's 95% bootstrap of the mean over seeds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from iif_ray.presets import PRESETS
from iif_ray.reporting import stats as st
from iif_ray.reporting import tables
from iif_ray.reporting.metrics import SMOOTH, efficiency, smoothed
from iif_ray.reporting.tables import markdown_table, runs_of

FINAL_ROUNDS = 5


def _final_return(run: pd.DataFrame) -> float:
    """Mean in-training evaluation return of the last ``FINAL_ROUNDS`` rounds: one round's
    few episodes are too noisy to stand for the end of a run."""
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
    algos = tables.ordered_algos(set(df[df.env == env].algo))
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
        rows.append([
            algo, str(len(runs)), str(rounds), final.fmt(digits=1), round_s.fmt(digits=2),
            dropped.fmt(digits=3),
            "-" if algo == "ppo" else se_ave.fmt(100, 1),
            "-" if algo == "ppo" else se_peak.fmt(100, 1),
            "-" if algo == "ppo" else rt.fmt(100, 1),
            tables.paper_figures(env, algo),
        ])
    if not ppo:
        notes.append("no PPO runs: efficiency metrics need PPO as the reference")
    return rows, notes


TABLE_HEAD = ["algo", "seeds", "rounds", "final return", "train s/round", "frac dropped",
              "SE_ave %", "SE_peak %", "RT_peak %", "paper SE_ave / SE_peak / RT_peak %"]


def plot_env(df: pd.DataFrame, env: str, path: Path) -> None:
    """Smoothed evaluation return of each known algorithm against steps and wall-clock."""
    fig, axes = tables.pyplot().subplots(1, 2, figsize=(11, 4))
    for algo in [a for a in tables.ALGO_ORDER if a in set(df[df.env == env].algo)]:
        runs = runs_of(df, env, algo)
        n = min(len(r) for r in runs.values())
        curves = np.stack([smoothed(r["eval_return"])[:n] for r in runs.values()])
        steps = next(iter(runs.values()))["env_steps"].to_numpy()[:n]
        clock = np.mean([np.cumsum(r["train_s"].to_numpy()[:n]) for r in runs.values()], 0)
        mean = curves.mean(0)
        # A descriptive band, as in the evidence curves: the intervals are in the tables.
        se = (curves.std(0, ddof=1) / np.sqrt(len(curves)) if len(curves) > 1
              else np.zeros_like(mean))
        tables.curve(axes, (steps, clock), mean, se, algo, len(curves))
    tables.finish_curves(fig, axes, f"eval return (stochastic, trailing mean of {SMOOTH})",
                   f"{env}: mean ± standard error over seeds", path)


def sb3_section(df: pd.DataFrame) -> str:
    """Our PPO against Stable-Baselines3's on the environments both ran: the check that our
    PPO baseline is a fair one ("" when no SB3 runs are present)."""
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
            f"Output of the command in `{BENCH_SB3}`, ours, SB3 and a bare torch PPO loop "
            "alternating round by round in one process:\n\n```\n"
            + path.read_text().strip() + "\n```\n")


def classic_sections(df: pd.DataFrame, directory: Path, envs: list[str]) -> list[str]:
    """Markdown (and a curve PNG in ``directory``) for each of ``envs`` from in-training rows."""
    parts: list[str] = []
    for env in envs:
        rows, notes = env_tables(df, env)
        png = directory / f"curves_{env}.png"
        plot_env(df, env, png)
        parts += [f"## {env}", "", markdown_table(TABLE_HEAD, rows), ""]
        parts += [f"- {n}" for n in notes]
        parts += ["", f"![{env}]({png.name})", ""]
    return parts
