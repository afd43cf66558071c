"""The run directory: the one place that names its files and writes or reads them.

Layout of a run directory::

    run.json         what was asked for (the run spec), written first
    ledger/          per-record Parquet ledgers (one file per round), see iif_ray.ledger
    progress.csv     one row per round (PROGRESS_FIELDS), appended as the run goes
    checkpoint/      RLlib checkpoint, every few rounds and at the end (replaced atomically)
    summary.json     written last, atomically: its presence means the run completed

A run that fails leaves no ``summary.json``, so nothing half-written looks complete; its
``run.json``, ``checkpoint/``, ledger and progress let ``iif-ray train --resume`` continue it
and ``iif-ray diagnose`` read it.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any, TextIO

from iif_ray.atomic_files import replace_atomically, write_json_atomically
from iif_ray.ledger import remove_rounds_after
from iif_ray.rllib.results import DEFAULT_MODULE, iif_metrics

RUN_SPEC = "run.json"
SUMMARY = "summary.json"
PROGRESS = "progress.csv"
CHECKPOINT = "checkpoint"
LEDGER = "ledger"
CONTENTS = f"{SUMMARY}, {PROGRESS}, {LEDGER}/, {CHECKPOINT}/"

PROGRESS_FIELDS = (
    "iteration", "env_steps", "episode_return_mean", "num_episodes", "frac_dropped",
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


def prepare_out_dir(out_dir: str | Path, overwrite: bool = False) -> Path:
    """Create an empty run directory, refusing to mix a new run into an old one.

    Raises:
        FileExistsError: ``out_dir`` is not empty and ``overwrite`` is false.
    """
    out = Path(out_dir).resolve()
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"output directory {str(out_dir)!r} is not empty; pass --overwrite to replace it"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def ledger_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / LEDGER


def progress_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / PROGRESS


class ProgressWriter:
    """Appends ``progress.csv`` rows, flushed every round so a crash keeps what ran."""

    def __init__(self, run_dir: str | Path, append: bool = False) -> None:
        path = progress_path(run_dir)
        fresh = not (append and path.exists())
        self._file: TextIO = path.open("w" if fresh else "a", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=PROGRESS_FIELDS)
        if fresh:
            self._writer.writeheader()

    def write(self, row: dict[str, float]) -> None:
        self._writer.writerow(row)
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def save_checkpoint(algo: Any, run_dir: str | Path) -> Path:
    """Save ``algo`` as ``checkpoint/``, replacing an older one only once the new one is whole."""
    run_dir = Path(run_dir)
    final = run_dir / CHECKPOINT
    tmp = run_dir / f".{CHECKPOINT}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    algo.save_to_path(str(tmp))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


def write_summary(run_dir: str | Path, summary: dict[str, Any]) -> Path:
    """Write ``summary.json`` atomically: it is what marks a run as complete."""
    return write_json_atomically(Path(run_dir) / SUMMARY, summary)


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    """The summary of a completed run.

    Raises:
        FileNotFoundError: the directory holds no completed run.
    """
    path = Path(run_dir) / SUMMARY
    if not path.exists():
        raise FileNotFoundError(f"{str(run_dir)!r} is not a completed run (no {SUMMARY})")
    return json.loads(path.read_text())


def module_checkpoint(run_dir: str | Path, module_id: str = DEFAULT_MODULE) -> Path:
    """The final RLModule's checkpoint inside ``checkpoint/`` (``RLModule.from_checkpoint``)."""
    return Path(run_dir, CHECKPOINT, "learner_group", "learner", "rl_module", module_id)


def write_run_spec(run_dir: str | Path, spec: dict[str, Any]) -> Path:
    """Write ``run.json`` (what was asked for) atomically, before the first round."""
    return write_json_atomically(Path(run_dir) / RUN_SPEC, spec)


def read_run_spec(run_dir: str | Path) -> dict[str, Any]:
    """The run spec an interrupted or finished run was started with.

    Raises:
        FileNotFoundError: the directory holds no run.
    """
    path = Path(run_dir) / RUN_SPEC
    if not path.exists():
        raise FileNotFoundError(f"{str(run_dir)!r} holds no run ({RUN_SPEC} is missing); "
                                "accepted: the --out directory of an iif-ray train run")
    return json.loads(path.read_text())


def static_summary(spec: dict[str, Any]) -> dict[str, Any]:
    """The summary fields known before training: what the run is, as ``summary.json`` and
    the diagnostics name them."""
    preset = spec["preset"]
    return {"preset": preset["name"], "env": preset["env_id"], "algo": spec["algo"],
            "seed": spec["seed"], "budget": int(spec.get("timesteps") or preset["timesteps"]),
            "attribution": dict(spec.get("attribution") or {}), "preset_settings": preset}


def read_summary_or_spec(run_dir: str | Path) -> dict[str, Any]:
    """``summary.json`` of a completed run, else the static summary of an interrupted one.

    Raises:
        FileNotFoundError: the directory holds neither.
    """
    if (Path(run_dir) / SUMMARY).exists():
        return read_summary(run_dir)
    try:
        return {**static_summary(read_run_spec(run_dir)), "completed": False}
    except FileNotFoundError:
        raise FileNotFoundError(f"{str(run_dir)!r} is not a run (no {SUMMARY}, no "
                                f"{RUN_SPEC})") from None


def read_progress(run_dir: str | Path) -> list[dict[str, float]]:
    """``progress.csv`` rows as numbers (an absent file reads as no rows)."""
    path = progress_path(run_dir)
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return [{k: (int(float(v)) if k in ("iteration", "env_steps") else float(v or "nan"))
                 for k, v in row.items()} for row in csv.DictReader(f)]


def rewind(run_dir: str | Path, algo: Any) -> list[dict[str, float]]:
    """Put an interrupted run back at its last checkpoint.

    Restores ``algo`` from ``checkpoint/`` (when there is one), keeps the progress rows up to
    that round, removes the ledger files of later rounds (they are trained again) and the
    summary (the run is not complete until it ends again).

    Returns:
        The progress rows kept, in round order.
    """
    run_dir = Path(run_dir)
    done = 0
    if (run_dir / CHECKPOINT).is_dir():
        algo.restore_from_path(str(run_dir / CHECKPOINT))
        done = int(algo.iteration)
    rows = [r for r in read_progress(run_dir) if r["iteration"] <= done]

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=PROGRESS_FIELDS)
            writer.writeheader()
            writer.writerows(rows)

    replace_atomically(progress_path(run_dir), write)
    remove_rounds_after(str(ledger_dir(run_dir)), done)
    (run_dir / SUMMARY).unlink(missing_ok=True)
    return rows
