"""The run directory's file names and paths: the one place that names them.

Both engines write the same layout (see :mod:`iif_ray.run`); an engine never spells a file
name itself, it asks for the path here.
"""

from __future__ import annotations

from pathlib import Path

RUN_SPEC = "run.json"
PROGRESS = "progress.csv"
LEDGER = "ledger"
CHECKPOINT = "checkpoint"
SUMMARY = "summary.json"
# An engine that saves its own state (the LM engine: learner, KL controller, generators)
# keeps it in one file inside ``checkpoint/``; RLlib fills the directory itself.
LEARNER_STATE = "learner.pt"
# The owner's lock (:mod:`iif_ray.run.ownership`): hidden, present only while a command runs.
LOCK = ".iif-ray.lock"
# A sweep's or demo's directory: the options it was started with (what makes it ours).
SWEEP_SPEC = "sweep.json"
CONTENTS = f"{SUMMARY}, {PROGRESS}, {LEDGER}/, {CHECKPOINT}/"


def ledger_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / LEDGER


def progress_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / PROGRESS


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINT


def old_checkpoint_dir(run_dir: str | Path) -> Path:
    """Where the previous checkpoint waits while a new one is swapped in (hidden)."""
    return Path(run_dir) / f".{CHECKPOINT}.old"


def learner_state_path(run_dir: str | Path) -> Path:
    """The state file of an engine that saves its own (``checkpoint/learner.pt``)."""
    return checkpoint_dir(run_dir) / LEARNER_STATE
