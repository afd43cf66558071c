"""Train one run to its env-step budget and leave a self-describing run directory."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from iif_ray import run_dir
from iif_ray.envs import time_limit
from iif_ray.presets import Preset
from iif_ray.rllib import build_config


@dataclass
class RunSpec:
    """One training run: preset, algorithm, seed, budget, resources and where it goes."""

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


def run(spec: RunSpec, on_round: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Train until ``spec.budget`` env steps.

    Args:
        spec: what to train and where the run directory goes (``out_dir=None``: nowhere).
        on_round: called with each round's ``progress.csv`` row (progress output).

    Returns:
        The run's summary (also written as ``summary.json`` when there is a run directory).
    """
    out = Path(spec.out_dir).resolve() if spec.out_dir else None
    attribution = dict(spec.attribution)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        attribution.setdefault("ledger_dir", str(run_dir.ledger_dir(out)))
    config = build_config(spec.preset, algo=spec.algo, seed=spec.seed,
                          num_env_runners=spec.num_env_runners, num_learners=spec.num_learners,
                          num_gpus_per_learner=spec.num_gpus_per_learner,
                          attribution=attribution)
    rows: list[dict] = []
    t0 = time.perf_counter()
    algo = config.build_algo()
    progress = None
    try:
        if out is not None:
            progress = run_dir.ProgressWriter(out)
        steps = 0
        while steps < spec.budget:
            row = run_dir.progress_row(algo.train(), time.perf_counter() - t0)
            steps = row["env_steps"]
            rows.append(row)
            if progress is not None:
                progress.write(row)
            if on_round is not None:
                on_round(row)
        placement = _placement(algo)
        wall = time.perf_counter() - t0
        if out is not None:
            run_dir.save_checkpoint(algo, out)
    finally:
        if progress is not None:
            progress.close()
        algo.stop()

    returns = [r["episode_return_mean"] for r in rows if not math.isnan(r["episode_return_mean"])]
    summary = {
        "preset": spec.preset.name,
        "env": spec.preset.env_id,
        "max_episode_steps": time_limit(spec.preset.env_id, spec.preset.env_kwargs),
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
        run_dir.write_summary(out, summary)
    return summary


def _placement(algo: Any) -> dict[str, Any]:
    """Where the driver, learners and scorer actors ran: the record of a cluster run."""
    import ray

    learners = algo.learner_group.foreach_learner(lambda learner: learner.placement())
    return {"driver_node_id": ray.get_runtime_context().get_node_id(),
            "learners": [r.get() if hasattr(r, "get") else r for r in learners]}


def _mean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return sum(vals) / len(vals) if vals else None
