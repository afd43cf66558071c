"""``iif-ray diagnose``: pictures (and numbers beside them) of what drove or harmed learning.

Reads a run directory (``iif-ray train --ledger-obs ...``) and writes ``RUN/diagnostics/``:
``index.md`` embedding the plots, CSV/Parquet tables behind every plot.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from iif_ray.diagnostics.ledgers import load_run

__all__ = ["diagnose", "write_probes"]


def _fmt(v: float, spec: str = ".3f") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def _md_table(df: pd.DataFrame, floats: str = ".3f") -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        cells = [_fmt(v, floats) if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def diagnose(run_dir: str | Path, *, intervene_rounds: list[int] | None = None,
             seeds: int = 3, episodes: int = 100,
             echo: Callable[[str], None] = print) -> Path:
    """Run the analyses that fit the run's target; return the path of ``index.md``."""
    run_dir = Path(run_dir)
    summary, frame, obs = load_run(run_dir)
    out = run_dir / "diagnostics"
    out.mkdir(exist_ok=True)
    target = summary["attribution"].get("target", "return")
    gamma = float(summary["preset_settings"].get("gamma", 0.99))
    parts = [f"# Diagnostics: {summary['algo']} on {summary['env']} (seed {summary['seed']})",
             "", f"{frame['iteration'].nunique()} rounds, {len(frame):,} scored records, "
             f"target `{target}`.", ""]
    if target == "return":
        from iif_ray.diagnostics.learning import diagnose_learning

        echo("diagnosis of learning: per-round shares, correlations, extremes")
        h = diagnose_learning(frame, obs, gamma, out)
        parts += ["## Diagnosis of learning", "",
                  "![over rounds](learning_over_rounds.png)", "",
                  "![influence vs advantage](influence_vs_advantage.png)", "",
                  f"Mean share of negative (harmful) records per round: "
                  f"{_fmt(h['mean_share_negative'])}; mean Spearman(score, advantage): "
                  f"{_fmt(h['mean_spearman_score_adv'])}. Per round: `learning_rounds.csv`.",
                  ""]
        if "spearman_score_mc_x_adv" in h:
            parts += ["### Monte-Carlo advantages from repeat visits", "",
                      "![mc](mc_advantage.png)", "",
                      f"Spearman(score, A_mc x A_hat) over {h['mc_records']:,} records with "
                      f"repeat visits: **{_fmt(h['spearman_score_mc_x_adv'])}** (the paper "
                      "reports about -0.67; here a positive score means helpful, and records "
                      "whose GAE sign agrees with A_mc score high, so agreement with the "
                      "paper's finding shows as a positive correlation). Sign mismatch "
                      "between A_mc and A_hat: "
                      f"{_fmt(h['sign_mismatch_bottom'])} among the bottom 10% of scores vs "
                      f"{_fmt(h['sign_mismatch_all'])} over all. Records: "
                      "`mc_advantages.parquet`.", ""]
        ext = pd.read_csv(out / "top_bottom_records.csv")
        parts += ["### Top and bottom records", "", _md_table(ext), ""]
        echo(f"  share negative {_fmt(h['mean_share_negative'])}, Spearman(score, adv) "
             f"{_fmt(h['mean_spearman_score_adv'])}"
             + (f", Spearman(score, A_mc x A_hat) {_fmt(h['spearman_score_mc_x_adv'])}"
                if "spearman_score_mc_x_adv" in h else ""))
    elif target == "action":
        from iif_ray.diagnostics.behaviour import diagnose_behaviour

        echo("behaviour formation: kNN roughness of the action target's influence per round")
        progress = pd.read_csv(run_dir / "progress.csv")
        h = diagnose_behaviour(frame, obs, progress, out)
        tops = pd.read_csv(out / "behaviour_top_records.csv")
        rounds = pd.read_csv(out / "behaviour_rounds.csv")
        parts += ["## Behaviour formation", "", "![behaviour](behaviour.png)", "",
                  f"Roughness (normalised Dirichlet energy on the {h['knn']}-NN graph of "
                  "standardised observations, positive-influence records) and the probe "
                  "action's probability before each round's update.", "",
                  _md_table(rounds), "", "### Top records", "", _md_table(tops), ""]
        echo(f"  roughness {_fmt(h['roughness_first'])} -> {_fmt(h['roughness_last'])}, probe "
             f"probability {_fmt(h['probe_probability_first'])} -> "
             f"{_fmt(h['probe_probability_last'])}")
    if intervene_rounds:
        from iif_ray.diagnostics.intervention import intervene, plot_intervention

        echo(f"targeted intervention: rounds {intervene_rounds} x {seeds} seed(s), "
             f"{episodes} evaluation episodes per variant")
        df = intervene(summary, intervene_rounds, list(range(seeds)), episodes, echo=echo)
        df.to_parquet(out / "intervention.parquet", index=False)
        plot_intervention(df, out / "intervention.png")
        stats = df[df["variant"] != "unfiltered"].groupby("variant")["delta"].agg(
            ["median", "mean", lambda d: float((d > 0).mean())])
        stats.columns = ["median delta", "mean delta", "share > 0"]
        parts += ["## Targeted intervention", "", "![intervention](intervention.png)", "",
                  f"Rounds {intervene_rounds}, {seeds} seed(s), {episodes} seeded stochastic "
                  "evaluation episodes per variant; change in return against retraining the "
                  "same round on the same buffer unfiltered.", "",
                  _md_table(stats.reset_index()), ""]
        for variant, row in stats.iterrows():
            echo(f"  {variant}: median delta {row['median delta']:+.3f}, "
                 f"share > 0 {row['share > 0']:.2f}")
    index = out / "index.md"
    index.write_text("\n".join(parts))
    return index


def write_probes(run_dir: str | Path, path: str | Path, round_: int, action: int) -> int:
    """Probe file of the states where the agent chose ``action`` in round ``round_``.

    The file feeds ``--target action --target-option probe_file=PATH``; returns its size.
    """
    _, frame, obs = load_run(run_dir)
    if obs is None:
        raise ValueError("probe states need observations in the ledger: train with --ledger-obs")
    sel = np.flatnonzero((frame["iteration"] == round_).to_numpy()
                         & (frame["action"] == action).to_numpy())
    if len(sel) == 0:
        raise ValueError(f"no record of round {round_} chose action {action}")
    flat = obs[sel].reshape(len(sel), -1).astype(np.float32)
    table = pa.table({
        "obs": pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()), flat.shape[1]),
        "action": pa.array(np.full(len(sel), action, dtype=np.int64)),
    }).replace_schema_metadata({b"obs_shape": ",".join(map(str, obs.shape[1:])).encode()})
    pq.write_table(table, str(path))
    return len(sel)
