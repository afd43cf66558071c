"""``RUN/diagnostics/index.md``: run the analyses that fit the run's target, embed the plots.

Pictures come first, each with its key numbers in the cell beside it; the full tables follow
and lie next to the plots as Parquet files.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from iif_ray.diagnostics.ledgers import load_run
from iif_ray.run import LM, RUN_SPEC, ledger_dir, read_progress, run_kind

OUT_DIR = "diagnostics"


def fmt(v: object, spec: str = ".3f") -> str:
    """Floats (numpy's too) to ``spec``, NaN and None to ``-``, anything else as text."""
    if v is None or (isinstance(v, float | np.floating) and math.isnan(v)):
        return "-"
    return format(float(v), spec) if isinstance(v, float | np.floating) else str(v)


def md_table(df: pd.DataFrame, floats: str = ".3f") -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(fmt(v, floats) for v in row) + " |")
    return "\n".join(lines)


def figure(png: str, caption: str, numbers: list[str]) -> list[str]:
    """A picture with its numbers beside it (a two-cell table row)."""
    return ["| picture | numbers |", "|---|---|",
            f"| ![{caption}]({png}) | " + "<br>".join(numbers) + " |", ""]


def _short_ids(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(episode_id=df["episode_id"].astype(str).str[:8])


def _learning_section(run_dir: Path, frame, obs, summary: dict, out: Path,
                      echo: Callable[[str], None]) -> list[str]:
    from iif_ray.diagnostics.learning import diagnose_learning

    echo("diagnosis of learning: shares, correlations, extremes, Monte-Carlo advantages")
    h = diagnose_learning(frame, obs, summary, out)
    table = pd.read_parquet(out / "learning_rounds.parquet")
    parts = ["## Diagnosis of learning (return target)", ""]
    parts += figure("learning_over_rounds.png", "over rounds", [
        f"rounds: {h['rounds']}",
        f"mean share of negative records: **{fmt(h['mean_share_negative'])}**",
        f"mean Spearman(score, A_hat): **{fmt(h['mean_spearman_score_adv'])}**",
        *([f"median Spearman(score, A_mc x A_hat): "
           f"**{fmt(h['median_spearman_score_mc_x_adv'])}**"]
          if "median_spearman_score_mc_x_adv" in h else [])])
    parts += figure("influence_vs_advantage.png", "influence vs advantage", [
        f"rounds shown: {', '.join(map(str, h['shown_rounds']))}",
        "red: records the run dropped", "score > 0: helped the round's return"])
    if "mc_records" in h:
        shown = h["spearman_score_mc_x_adv_shown"]
        parts += ["### Advantage sign errors (Monte-Carlo advantages from repeat visits)", ""]
        by_round = table.set_index("round")
        parts += figure("mc_advantage.png", "influence vs A_mc x A_hat", [
            *(f"round {k}: Spearman(score, A_mc x A_hat) **{fmt(v)}**; sign mismatch "
              f"A_mc vs A_hat: **{fmt(by_round.loc[k, 'sign_mismatch_bottom'])}** in the "
              f"bottom 10%, {fmt(by_round.loc[k, 'sign_mismatch_all'])} overall"
              for k, v in shown.items()),
            f"median over rounds: Spearman "
            f"**{fmt(h['median_spearman_score_mc_x_adv'])}**; sign mismatch "
            f"{fmt(float(table['sign_mismatch_bottom'].median()))} in the bottom 10%, "
            f"{fmt(float(table['sign_mismatch_all'].median()))} overall",
            f"records with an estimate: {h['mc_records']:,}"])
        parts += ["A_mc(s, a) is the mean discounted return-to-go after (s, a) minus the "
                  "mean after s, over the round's own buffer (pairs seen at least twice; "
                  "episode chunks cut off by the buffer's end left out). The paper reports "
                  "a Spearman correlation of about -0.67 between influence and "
                  "A_mc x A_hat on FrozenLake. Here a positive score means helpful, so "
                  "bottom records carrying sign errors (A_mc x A_hat < 0) show as a "
                  "positive correlation; compare the sign-mismatch rates.", ""]
    if h.get("grid"):
        parts += ["### Top and bottom records on the map", "",
                  "![top and bottom records on the map](top_bottom_on_map.png)", ""]
    cols = [c for c in table.columns if c != "records"]
    parts += ["### Per round", "", md_table(table[cols]), ""]
    ext = pd.read_parquet(out / "top_bottom_records.parquet")
    ext = _short_ids(ext[ext["iteration"].isin(h["shown_rounds"])])
    parts += ["### Top and bottom records", "",
              f"Rounds {', '.join(map(str, h['shown_rounds']))}; every round in "
              "`top_bottom_records.parquet`.", "", md_table(ext), ""]
    echo(f"  share negative {fmt(h['mean_share_negative'])}, Spearman(score, A_hat) "
         f"{fmt(h['mean_spearman_score_adv'])}"
         + (f", median Spearman(score, A_mc x A_hat) "
            f"{fmt(h['median_spearman_score_mc_x_adv'])}" if "mc_records" in h else ""))
    return parts


def _behaviour_section(run_dir: Path, frame, obs, summary: dict, out: Path,
                       echo: Callable[[str], None]) -> list[str]:
    from iif_ray.diagnostics.behaviour import diagnose_behaviour

    echo("behaviour formation: kNN-graph roughness of the action target's influence per round")
    progress = pd.DataFrame(read_progress(run_dir))  # a classic run's old 'iteration' too
    h = diagnose_behaviour(run_dir, summary, frame, obs, progress, out)
    table = pd.read_parquet(out / "behaviour_rounds.parquet")
    opts = summary["attribution"].get("target_options", {})
    parts = ["## Behaviour formation (action target)", "",
             f"Target options: `{opts}`.", ""]
    parts += figure("behaviour.png", "roughness and probe probability", [
        f"roughness, round {table['round'].iloc[0]}: **{fmt(h['roughness_first'])}**",
        f"roughness, round {table['round'].iloc[-1]}: **{fmt(h['roughness_last'])}**",
        f"probe probability: {fmt(h['probe_probability_first'])} -> "
        f"{fmt(h['probe_probability_last'])}",
        f"graph: {h['knn']}-NN, symmetrised, Gaussian weights, median heuristic",
        f"embedding: {h['embedding']}"])
    parts += figure("behaviour_scores.png", "influence vs advantage by action", [
        f"rounds shown: {', '.join(map(str, h['shown_rounds']))}",
        "score > 0: the record raises the probe action's log-probability"])
    parts += ["Roughness is the normalised Dirichlet energy sum w_ij (I_i - I_j)^2 / sum w_ij "
              "of I / max|I| over the positive-influence records of the round. The probe "
              "probability is exp(mean log-probability of the probe actions) before the "
              "round's update (`target_value` in progress.csv).", "",
              "### Per round", "", md_table(table), ""]
    tops = pd.read_parquet(out / "behaviour_top_records.parquet")
    tops = _short_ids(tops[tops["iteration"].isin(h["shown_rounds"])])
    parts += ["### Top records", "", "Every round in `behaviour_top_records.parquet`.", "",
              md_table(tops), ""]
    echo(f"  roughness {fmt(h['roughness_first'])} -> {fmt(h['roughness_last'])}, probe "
         f"probability {fmt(h['probe_probability_first'])} -> "
         f"{fmt(h['probe_probability_last'])} (embedding: {h['embedding']})")
    return parts


def _intervention_section(summary: dict, out: Path, rounds: list[int] | None, seeds: int,
                          episodes: int, echo: Callable[[str], None]) -> list[str]:
    """Run the intervention (``rounds`` given) or re-render an earlier one's Parquet rows, so
    a plain ``diagnose RUN`` keeps what a long ``--intervene`` call measured."""
    from iif_ray.diagnostics.intervention import (
        intervene,
        metric_name,
        plot_intervention,
        summarise,
    )

    target = summary["attribution"].get("target", "return")
    metric = metric_name(target)
    path = out / "intervention.parquet"
    if rounds:
        echo(f"targeted intervention: rounds {','.join(map(str, rounds))} x {seeds} seed(s), "
             f"measuring the {metric.replace('_', ' ')}")
        df = intervene(summary, rounds, list(range(seeds)), episodes, echo=echo)
        df.to_parquet(path, index=False)
        note = ""
    elif path.exists():
        df = pd.read_parquet(path)
        note = " (rows of an earlier `--intervene` call)"
    else:
        return []
    rounds = sorted(df["round"].unique().tolist())
    seed_list = sorted(df["seed"].unique().tolist())
    if "episodes" in df:
        episodes = int(df["episodes"].iloc[0])
    elif note:
        episodes = None  # not recorded by that call
    count = f"{episodes} " if episodes else ""
    how = (f"{count}seeded stochastic evaluation episodes per variant" if target == "return"
           else "the probe action's probability at the probe states after the update")
    plot_intervention(df, out / "intervention.png", metric)
    stats, beats = summarise(df)
    numbers = [f"{r.variant}: median change **{r.median_delta:+.3f}**, mean "
               f"{r.mean_delta:+.3f}, > 0 in {r.share_positive:.0%}, < 0 in "
               f"{r.share_negative:.0%} of {r.n}" for r in stats.itertuples()]
    numbers.append(f"(seed, round) pairs where removing the harmful records did better than "
                   f"removing random ones: {beats[0]:.0%}, as well: {beats[1]:.0%}")
    per_round = (df[df["variant"] != "unfiltered"]
                 .pivot_table(index="round", columns="variant", values="delta",
                              aggfunc="median")
                 .rename(columns={"influence": "median change without harmful",
                                  "random": "median change without random"})
                 .reset_index())
    parts = ["## Targeted intervention", ""]
    parts += figure("intervention.png", "intervention", numbers)
    parts += [f"Rounds {', '.join(map(str, rounds))}, seeds {', '.join(map(str, seed_list))}"
              f"{note}. For each seed PPO trains unfiltered (scoring only) up to round k; "
              "round k's buffer is sampled once and, from the same learner snapshot and "
              "minibatch seed, trained (a) unfiltered, (b) without every record with negative "
              f"influence on the `{target}` target (\"influence\"), (c) without as many random "
              f"records (\"random\"). Measure: {how}; change against (a). Rows: "
              "`intervention.parquet`.", "", md_table(stats), "", md_table(per_round), ""]
    for r in stats.itertuples():
        echo(f"  {r.variant}: median change {r.median_delta:+.3f}, > 0 in "
             f"{r.share_positive:.0%} of {r.n}")
    return parts


def is_lm_run(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a run of the LM engine (its ``run.json`` says so)."""
    return run_kind(run_dir) == LM


def check_intervention(run_dir: str | Path, rounds: list[int] | None) -> None:
    """``--intervene`` checked before Ray starts (callers call this first): a classic run
    with a ledger, and rounds it trained. A round beyond the run's last would retrain the
    run towards it, for as long as that takes, to compare with records that do not exist.

    Raises:
        FileNotFoundError: no run, or a run without a ledger.
        ValueError: an LM run, or a round the run did not train.
    """
    if not rounds:
        return
    kind = run_kind(run_dir)
    if kind is None:
        raise FileNotFoundError(f"{str(run_dir)!r} is not a run (no {RUN_SPEC}); accepted: "
                                "the --out directory of an iif-ray train run")
    if kind == LM:
        raise ValueError("--intervene retrains classic rounds; for an LM run use "
                         "iif-ray lm-checks (the single-round intervention)")
    ledger = ledger_dir(run_dir)
    if not ledger.is_dir() or not any(ledger.iterdir()):
        raise FileNotFoundError(f"{str(run_dir)!r} has no ledger/; train with iif or score "
                                "mode")
    trained = len(read_progress(run_dir))
    beyond = [k for k in rounds if k > trained]
    if beyond:
        raise ValueError(f"--intervene {','.join(map(str, beyond))}: {str(run_dir)!r} trained "
                         f"{trained} round(s); accepted: rounds 1 to {trained}")


def diagnose(run_dir: str | Path, *, intervene_rounds: list[int] | None = None,
             seeds: int = 3, episodes: int = 100,
             echo: Callable[[str], None] = print) -> Path:
    """Run the analyses that fit the run's target; return the path of ``index.md``.

    An LM run (``iif-ray train-lm``) gets its sequence analysis instead
    (:mod:`iif_ray.diagnostics.sequences`); ``--intervene`` is for classic runs.
    """
    run_dir = Path(run_dir)
    check_intervention(run_dir, intervene_rounds)
    out = run_dir / OUT_DIR
    if is_lm_run(run_dir):
        from iif_ray.diagnostics.sequences import diagnose_lm

        out.mkdir(exist_ok=True)
        index = out / "index.md"
        index.write_text("\n".join(diagnose_lm(run_dir, out, echo)))
        return index
    summary, frame, obs = load_run(run_dir)  # refuses a run without a ledger: nothing written
    out.mkdir(exist_ok=True)
    settings = summary["attribution"]
    target = settings.get("target", "return")
    parts = [f"# Diagnostics: {summary['algo']} (mode {settings.get('mode')}) on "
             f"{summary['env']}, seed {summary['seed']}", "",
             f"{frame['iteration'].nunique()} rounds, {len(frame):,} scored records, target "
             f"`{target}`, observations in the ledger: {'yes' if obs is not None else 'no'}.",
             ""]
    if target == "return":
        parts += _learning_section(run_dir, frame, obs, summary, out, echo)
    elif target == "action":
        parts += _behaviour_section(run_dir, frame, obs, summary, out, echo)
    else:
        parts += [f"No built-in analysis for the `{target}` target; the ledger has its "
                  "scores.", ""]
    parts += _intervention_section(summary, out, intervene_rounds, seeds, episodes, echo)
    index = out / "index.md"
    index.write_text("\n".join(parts))
    return index
