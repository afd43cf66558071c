"""Train one run to its env-step budget and leave a self-describing run directory.

The run directory also lets an interrupted run continue (:func:`resume`): ``run.json`` holds
what was asked for, ``checkpoint/`` is refreshed every ``checkpoint_every`` rounds, and the
rounds after that checkpoint are trained again and their ledger files and progress rows
rewritten, so a resumed run ends with exactly one of each per round.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from iif_ray.envs import time_limit
from iif_ray.presets import Preset
from iif_ray.rllib import build_config
from iif_ray.rllib.run_files import (
    PROGRESS_FIELDS,
    progress_row,
    restorer,
    save_checkpoint,
    static_summary,
)
from iif_ray.run import (
    CLASSIC,
    ProgressWriter,
    ledger_dir,
    read_run_spec,
    rewind,
    write_run_spec,
    write_summary,
)


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
    checkpoint_every: int = 10  # rounds between checkpoints (the points a resume restarts at)

    @property
    def budget(self) -> int:
        return int(self.timesteps if self.timesteps is not None else self.preset.timesteps)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["preset"] = asdict(self.preset)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        return cls(**{**data, "preset": Preset(**data["preset"])})


def run(spec: RunSpec, on_round: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Train until ``spec.budget`` env steps.

    Args:
        spec: what to train and where the run directory goes (``out_dir=None``: nowhere).
        on_round: called with each round's ``progress.csv`` row (progress output).

    Returns:
        The run's summary (also written as ``summary.json`` when there is a run directory).
    """
    out = Path(spec.out_dir).resolve() if spec.out_dir else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_run_spec(out, spec.to_dict(), CLASSIC)
    return _train(spec, out, on_round, resumed=False)


def resume(out_dir: str | Path, on_round: Callable[[dict], None] | None = None
           ) -> dict[str, Any]:
    """Continue an interrupted run in its own directory, from its last checkpoint.

    Rounds after the checkpoint are trained again: their progress rows are dropped and their
    ledger files rewritten. What a checkpoint does not hold starts anew: the environments
    (an episode running at the checkpoint is not continued) and the sampling RNG state.

    Raises:
        FileNotFoundError: ``out_dir`` holds no run (no ``run.json``).
        RunKindError: it holds an LM run (``iif-ray train-lm --resume`` continues those).
    """
    out = Path(out_dir).resolve()
    spec = RunSpec.from_dict(read_run_spec(out, CLASSIC))
    spec.out_dir = str(out)
    return _train(spec, out, on_round, resumed=True)


def _train(spec: RunSpec, out: Path | None, on_round: Callable[[dict], None] | None, *,
           resumed: bool) -> dict[str, Any]:
    attribution = dict(spec.attribution)
    if out is not None:
        # The run's own directory, also when it moved since: nothing absolute is reused.
        attribution["ledger_dir"] = str(ledger_dir(out))
    config = build_config(spec.preset, algo=spec.algo, seed=spec.seed,
                          num_env_runners=spec.num_env_runners, num_learners=spec.num_learners,
                          num_gpus_per_learner=spec.num_gpus_per_learner,
                          attribution=attribution)
    t_start = time.perf_counter()
    algo = config.build_algo()
    rows: list[dict] = []
    progress = None
    try:
        if out is not None:
            if resumed:
                rows = rewind(out, PROGRESS_FIELDS, restorer(algo))
            progress = ProgressWriter(out, PROGRESS_FIELDS, append=resumed)
        t0 = t_start - (rows[-1]["wall_s"] if rows else 0.0)
        steps = rows[-1]["env_steps"] if rows else 0
        while steps < spec.budget:
            row = progress_row(algo.train(), time.perf_counter() - t0)
            steps = row["env_steps"]
            rows.append(row)
            if progress is not None:
                progress.write(row)
                if row["round"] % spec.checkpoint_every == 0:
                    save_checkpoint(algo, out)
            if on_round is not None:
                on_round(row)
        placement = _placement(algo)
        wall = time.perf_counter() - t0
        if out is not None:
            save_checkpoint(algo, out)
    finally:
        if progress is not None:
            progress.close()
        algo.stop()

    returns = [r["episode_return_mean"] for r in rows
               if not math.isnan(float(r["episode_return_mean"]))]
    summary = {
        **static_summary(spec.to_dict()),
        "max_episode_steps": time_limit(spec.preset.env_id, spec.preset.env_kwargs),
        "env_steps": rows[-1]["env_steps"] if rows else 0,
        "rounds": len(rows),
        "resumed": resumed,
        "final_return": returns[-1] if returns else None,
        "best_return": max(returns) if returns else None,
        "wall_s": wall,
        "mean_frac_dropped": _mean(r["frac_dropped"] for r in rows),
        "mean_scoring_s": _mean(r["scoring_s"] for r in rows),
        "mean_update_s": _mean(r["update_s"] for r in rows),
        "attribution": config.attribution_settings.to_dict(),
        "resources": {"num_learners": spec.num_learners,
                      "num_gpus_per_learner": spec.num_gpus_per_learner, **placement},
        "rounds_detail": rows,
    }
    if out is not None:
        write_summary(out, summary)
    return summary


def _placement(algo: Any) -> dict[str, Any]:
    """Where the driver, learners and scorer actors ran: the record of a cluster run."""
    import ray

    learners = algo.learner_group.foreach_learner(lambda learner: learner.placement())
    return {"driver_node_id": ray.get_runtime_context().get_node_id(),
            "learners": [r.get() if hasattr(r, "get") else r for r in learners]}


def _mean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None and not math.isnan(float(v))]
    return sum(vals) / len(vals) if vals else None
