"""Behaviour formation (action target): which records shape a chosen behaviour, round by round.

The run scores every record against ``f_action`` (mean log-probability of the probe actions at
the probe states). Per round: the top records, and the roughness of the positive influence
over a kNN graph of record embeddings (normalised Dirichlet energy, paper §4.2) beside the
probe action's probability before the round's update. The paper sees three phases: rough
(action-advantage association), smooth (semantic clusters), then saturation near zero.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from iif_ray.diagnostics.graph import KNN, roughness
from iif_ray.diagnostics.learning import RECORD_COLUMNS
from iif_ray.diagnostics.ledgers import (
    action_labels,
    load_run,
    pyplot,
    show_rounds,
    state_summaries,
)
from iif_ray.rllib.run_files import module_checkpoint


def observation_embeddings(obs: np.ndarray) -> np.ndarray:
    """Fallback embeddings: observations, flattened and standardised per feature."""
    flat = obs.reshape(len(obs), -1).astype(np.float64)
    std = flat.std(axis=0)
    return (flat - flat.mean(axis=0)) / np.where(std > 0, std, 1.0)


def policy_embeddings(run_dir: str | Path, obs: np.ndarray,
                      chunk: int = 4096) -> tuple[np.ndarray, str]:
    """Embeddings from the final policy network (the paper's choice): the input of the
    policy's output layer, i.e. its last hidden layer, applied to the stored observations.

    Raises ``FileNotFoundError`` when the run has no checkpoint.
    """
    import torch
    from ray.rllib.core.rl_module.rl_module import RLModule

    from iif_ray.rllib.module_bridge import policy_net

    path = module_checkpoint(run_dir).resolve()
    if not path.exists():
        raise FileNotFoundError(f"no policy checkpoint at {path}")
    disabled = logging.root.manager.disable
    logging.disable(logging.WARNING)  # a deprecation notice from inside RLlib, not ours to fix
    try:
        module = RLModule.from_checkpoint(path)
    finally:
        logging.disable(disabled)
    net = policy_net(module)
    last = [m for m in net.modules() if isinstance(m, torch.nn.Linear)][-1]
    captured: list[torch.Tensor] = []
    hook = last.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach()))
    try:
        with torch.no_grad():
            for start in range(0, len(obs), chunk):
                net(torch.as_tensor(obs[start:start + chunk], dtype=torch.float32))
    finally:
        hook.remove()
    emb = torch.cat(captured).reshape(len(obs), -1).double().numpy()
    return emb, f"final policy's last hidden layer ({emb.shape[1]} units)"


def embeddings(run_dir: str | Path, obs: np.ndarray) -> tuple[np.ndarray, str]:
    """Policy embeddings where the checkpoint loads, standardised observations otherwise;
    the second item says which, for the report."""
    try:
        return policy_embeddings(run_dir, obs)
    except Exception as e:
        return observation_embeddings(obs), (f"standardised observations (policy checkpoint "
                                             f"unusable: {type(e).__name__})")


def probe_actions(summary: dict) -> set[int]:
    """The action(s) the target asks about, where they can be read back from the settings."""
    opts = summary.get("attribution", {}).get("target_options", {}) or {}
    if opts.get("action") is not None:
        return {int(opts["action"])}
    path = opts.get("probe_file")
    if not path or not Path(path).exists():
        return set()
    if str(path).endswith(".parquet"):
        table = pq.read_table(path)
        if "action" in table.column_names:
            return {int(a) for a in set(table.column("action").to_pylist())}
    elif str(path).endswith(".npz"):
        data = np.load(path)
        if "actions" in data:
            return {int(a) for a in np.unique(data["actions"])}
    return set()


def per_round(frame: pd.DataFrame, emb: np.ndarray, k: int = KNN) -> pd.DataFrame:
    """Positive-influence records and the roughness of their influence, per round."""
    rows = []
    for it, g in frame.groupby("iteration"):
        pos = g.index[g["score"].to_numpy() > 0].to_numpy()
        rows.append({"round": int(it), "positive_records": len(pos),
                     "max_score": float(g["score"].max()),
                     "roughness": roughness(frame.loc[pos, "score"].to_numpy(), emb[pos], k)
                     if len(pos) > 2 else math.nan})
    return pd.DataFrame(rows)


def _plot_rounds(plt, table: pd.DataFrame, path: Path, knn: int) -> None:
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot(table["round"], table["roughness"], marker=".", label="roughness of influence")
    ax.set(xlabel="round", ylabel=f"normalised Dirichlet energy ({knn}-NN graph)")
    ax2 = ax.twinx()
    ax2.plot(table["round"], table["probe_probability"], color="tab:green", marker=".",
             label="probe action probability")
    ax2.set(ylabel="probe action probability", ylim=(0, 1))
    fig.legend(loc="upper center", ncol=2, fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_scores(plt, frame: pd.DataFrame, shown: list[int], probes: set[int],
                 path: Path) -> None:
    fig, axes = plt.subplots(1, len(shown), figsize=(3.4 * len(shown), 3.3), squeeze=False)
    actions = sorted(frame["action"].unique().tolist())
    cmap = plt.get_cmap("tab10")
    for a, it in zip(axes[0], shown, strict=True):
        g = frame[frame["iteration"] == it]
        for n, act in enumerate(actions[:10]):
            sel = g[g["action"] == act]
            a.scatter(sel["advantage"], sel["score"], s=6, alpha=0.5, color=cmap(n),
                      label=f"action {act}" + (" (probe)" if act in probes else ""))
        a.axhline(0, color="gray", lw=0.5)
        a.axvline(0, color="gray", lw=0.5)
        a.set(title=f"round {it}", xlabel="advantage (raw GAE)", ylabel="influence on f_action")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def diagnose_behaviour(run_dir: str | Path, summary: dict, frame: pd.DataFrame,
                       obs: np.ndarray | None, progress: pd.DataFrame, out: Path,
                       k: int = KNN) -> dict:
    """Write the behaviour-formation tables and plots into ``out``; return headline numbers."""
    if obs is None:
        raise ValueError("behaviour formation needs observations in the ledger: train with "
                         "--ledger-obs")
    frame = frame.copy()
    frame["state"] = state_summaries(obs)
    env_id = str(summary.get("env", ""))
    if env_id.startswith("FrozenLake"):
        frame["move"] = action_labels(frame["action"].to_numpy(), env_id)
    emb, emb_kind = embeddings(run_dir, obs)
    table = per_round(frame, emb, k)
    prog = progress[["round", "target_value"]]
    table = table.merge(prog, on="round", how="left")
    # f_action is a mean log-probability: exp gives the probes' geometric-mean probability.
    table["probe_probability"] = np.exp(table["target_value"])
    table.to_parquet(out / "behaviour_rounds.parquet", index=False)
    plt = pyplot()
    _plot_rounds(plt, table, out / "behaviour.png", k)
    rounds = table["round"].tolist()
    shown = show_rounds(rounds)
    _plot_scores(plt, frame, shown, probe_actions(summary), out / "behaviour_scores.png")

    cols = RECORD_COLUMNS + (["move"] if "move" in frame else [])
    tops = (frame.sort_values("score", ascending=False, kind="stable")
            .groupby("iteration", sort=True).head(5).sort_values(["iteration", "score"],
                                                                ascending=[True, False]))
    tops[cols].to_parquet(out / "behaviour_top_records.parquet", index=False)
    return {"rounds": len(table), "knn": k, "embedding": emb_kind, "shown_rounds": shown,
            "roughness_first": float(table["roughness"].iloc[0]),
            "roughness_last": float(table["roughness"].iloc[-1]),
            "probe_probability_first": float(table["probe_probability"].iloc[0]),
            "probe_probability_last": float(table["probe_probability"].iloc[-1])}


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
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, str(path))
    return len(sel)
