"""What the classic (RLlib) engine puts into the run model (:mod:`iif_ray.run`): its
``progress.csv`` schema and rows, taken from RLlib's result dict, its checkpoint (RLlib's
own directory), and the summary fields known from its spec.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import Any

from iif_ray.rllib.results import DEFAULT_MODULE, iif_metrics
from iif_ray.run import CHECKPOINT, ROUND, checkpoint_dir, old_checkpoint_dir

PROGRESS_FIELDS = (
    ROUND, "env_steps", "episode_return_mean", "num_episodes", "frac_dropped",
    "frac_negative", "spearman_score_adv", "target_value", "num_records", "scoring_s",
    "update_s", "sampling_s", "iter_s", "wall_s",
)


def _get(d: dict, *path: str, default: float = math.nan) -> float:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return default
        d = d[key]
    try:
        return float(d)
    except (TypeError, ValueError):
        return default


def progress_row(result: dict, wall_s: float) -> dict[str, float]:
    """One ``progress.csv`` row: the per-round figures kept from RLlib's nested result dict."""
    iif = iif_metrics(result)
    iter_s = _get(result, "time_this_iter_s")
    learner_s = _get(iif, "filter_s", default=0.0) + _get(iif, "update_s", default=0.0)
    return {
        ROUND: int(result.get("training_iteration", 0)),
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


def save_checkpoint(algo: Any, run_dir: str | Path) -> Path:
    """Save ``algo`` as ``checkpoint/``, replacing an older one only once the new one is whole.

    The new checkpoint is written beside the old one (a save that fails, e.g. on a full disk,
    removes its partial copy and keeps the old), then swapped in by renames; a kill between
    the two renames leaves the old one as ``.checkpoint.old``, which
    :func:`iif_ray.run.rewind.recover_checkpoint` puts back.
    """
    final = checkpoint_dir(run_dir)
    tmp = Path(run_dir) / f".{CHECKPOINT}.tmp"
    old = old_checkpoint_dir(run_dir)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        algo.save_to_path(str(tmp))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def restorer(algo: Any):
    """How :func:`iif_ray.run.rewind` restores ``algo``: from ``checkpoint/``, returning the
    round it was taken after."""
    def restore(checkpoint: Path) -> int:
        algo.restore_from_path(str(checkpoint))
        return int(algo.iteration)

    return restore


def module_checkpoint(run_dir: str | Path, module_id: str = DEFAULT_MODULE) -> Path:
    """The final RLModule's checkpoint inside ``checkpoint/`` (``RLModule.from_checkpoint``)."""
    return checkpoint_dir(run_dir) / "learner_group" / "learner" / "rl_module" / module_id


def static_summary(spec: dict[str, Any]) -> dict[str, Any]:
    """The summary fields known before training: what the run is, as ``summary.json`` and
    the diagnostics name them."""
    preset = spec["preset"]
    return {"preset": preset["name"], "env": preset["env_id"], "algo": spec["algo"],
            "seed": spec["seed"], "budget": int(spec.get("timesteps") or preset["timesteps"]),
            "attribution": dict(spec.get("attribution") or {}), "preset_settings": preset}
