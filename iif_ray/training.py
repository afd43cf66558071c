"""Run one training job to a step budget and leave a self-describing run directory.

Layout of ``out_dir``::

    ledger/          per-record Parquet ledgers (one file per round)
    progress.csv     one row per round, appended as the run goes
    checkpoint/      RLlib checkpoint of the final state (restorable with IIFPPO.from_checkpoint)
    summary.json     written last, atomically: its presence means the run completed

A run that fails leaves no ``summary.json`` and no ``checkpoint/``, so nothing half-written
looks complete.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from iif_ray.presets import Preset, build_config

SUMMARY = "summary.json"
PROGRESS = "progress.csv"
CHECKPOINT = "checkpoint"
LEDGER = "ledger"

ROW_FIELDS = (
    "iteration", "env_steps", "episode_return_mean", "num_episodes", "frac_dropped",
    "frac_negative", "spearman_score_adv", "target_value", "num_records", "scoring_s",
    "update_s",
    "sampling_s", "iter_s", "wall_s",
)


@dataclass
class RunSpec:
    preset: Preset
    algo: str = "iif"
    seed: int = 0
    timesteps: int | None = None  # None: the preset's paper budget
    out_dir: str | None = None
    num_env_runners: int = 0
    num_learners: int = 0
    num_gpus_per_learner: float = 0.0
    attribution: dict[str, Any] = field(default_factory=dict)

    @property
    def budget(self) -> int:
        return int(self.timesteps if self.timesteps is not None else self.preset.timesteps)


def _get(d: dict, *path: str, default: float = math.nan) -> float:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return default
        d = d[key]
    try:
        return float(d)
    except (TypeError, ValueError):
        return default


def result_row(result: dict, wall_s: float) -> dict[str, float]:
    """The per-round figures we keep from RLlib's (large, nested) result dict."""
    iif = result.get("learners", {}).get("default_policy", {}).get("iif", {})
    iter_s = _get(result, "time_this_iter_s")
    learner_s = _get(iif, "filter_s", default=0.0) + _get(iif, "update_s", default=0.0)
    return {
        "iteration": int(result.get("training_iteration", 0)),
        "env_steps": int(_get(result, "num_env_steps_sampled_lifetime", default=0)),
        "episode_return_mean": _get(result, "env_runners", "episode_return_mean"),
        "num_episodes": _get(result, "env_runners", "num_episodes", default=0),
        "frac_dropped": _get(iif, "frac_dropped"),
        "frac_negative": _get(iif, "frac_negative"),
        "spearman_score_adv": _get(iif, "spearman_score_adv"),
        "target_value": _get(iif, "target_value"),
        "num_records": _get(iif, "num_records"),
        "scoring_s": _get(iif, "scoring_s", default=0.0),
        "update_s": _get(iif, "update_s"),
        # Everything in the round that is not filtering or the PPO update: sampling, GAE,
        # batching, weight sync. (RLlib's own timers are moving averages, not per round.)
        "sampling_s": iter_s - learner_s,
        "iter_s": iter_s,
        "wall_s": wall_s,
    }


def _atomic_write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def prepare_out_dir(out_dir: str | Path, overwrite: bool = False) -> Path:
    """Refuse to mix a new run into an old one unless asked to replace it."""
    out = Path(out_dir).resolve()
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"output directory {str(out_dir)!r} is not empty; pass --overwrite to replace it"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def run(spec: RunSpec, on_round: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Train until ``spec.budget`` env steps; return (and, with ``out_dir``, write) the summary."""
    out = Path(spec.out_dir).resolve() if spec.out_dir else None
    attribution = dict(spec.attribution)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        attribution.setdefault("ledger_dir", str(out / LEDGER))
    config = build_config(spec.preset, algo=spec.algo, seed=spec.seed,
                          num_env_runners=spec.num_env_runners, num_learners=spec.num_learners,
                          num_gpus_per_learner=spec.num_gpus_per_learner,
                          attribution=attribution)
    rows: list[dict] = []
    t0 = time.perf_counter()
    algo = config.build_algo()
    progress_file = None
    try:
        if out is not None:
            progress_file = (out / PROGRESS).open("w", newline="")
            writer = csv.DictWriter(progress_file, fieldnames=ROW_FIELDS)
            writer.writeheader()
        steps = 0
        while steps < spec.budget:
            row = result_row(algo.train(), time.perf_counter() - t0)
            steps = row["env_steps"]
            rows.append(row)
            if progress_file is not None:
                writer.writerow(row)
                progress_file.flush()
            if on_round is not None:
                on_round(row)
        placement = _placement(algo)
        wall = time.perf_counter() - t0
        if out is not None:
            tmp = out / f".{CHECKPOINT}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            algo.save_to_path(str(tmp))
            shutil.rmtree(out / CHECKPOINT, ignore_errors=True)
            os.replace(tmp, out / CHECKPOINT)
    finally:
        if progress_file is not None:
            progress_file.close()
        algo.stop()

    returns = [r["episode_return_mean"] for r in rows if not math.isnan(r["episode_return_mean"])]
    summary = {
        "preset": spec.preset.name,
        "env": spec.preset.env_id,
        "algo": spec.algo,
        "seed": spec.seed,
        "budget": spec.budget,
        "env_steps": rows[-1]["env_steps"] if rows else 0,
        "rounds": len(rows),
        "final_return": returns[-1] if returns else None,
        "best_return": max(returns) if returns else None,
        "wall_s": wall,
        "mean_frac_dropped": _mean(r["frac_dropped"] for r in rows),
        "mean_scoring_s": _mean(r["scoring_s"] for r in rows),
        "mean_update_s": _mean(r["update_s"] for r in rows),
        "attribution": config.attribution_settings.to_dict(),
        "resources": {"num_learners": spec.num_learners,
                      "num_gpus_per_learner": spec.num_gpus_per_learner, **placement},
        "preset_settings": asdict(spec.preset),
        "rounds_detail": rows,
    }
    if out is not None:
        _atomic_write_json(out / SUMMARY, summary)
    return summary


def _placement(algo: Any) -> dict[str, Any]:
    """Where the driver, learners and scorer actors ran: the record of a cluster run."""
    import ray

    learners = algo.learner_group.foreach_learner(lambda learner: learner.placement())
    return {"driver_node_id": ray.get_runtime_context().get_node_id(),
            "learners": [r.get() if hasattr(r, "get") else r for r in learners]}


def _mean(values) -> float | None:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return sum(vals) / len(vals) if vals else None
