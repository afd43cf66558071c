"""The run directory's file names and paths: the one place that names them.

Both engines write the same layout (see :mod:`iif_ray.run`); an engine never spells a file
name itself, it asks for the path here.
"""

from __future__ import annotations

import shutil
from pathlib import Path

RUN_SPEC = "run.json"
PROGRESS = "progress.csv"
LEDGER = "ledger"
CHECKPOINT = "checkpoint"
SUMMARY = "summary.json"
# An engine that saves its own state (the LM engine: learner, KL controller, generators)
# keeps it in one file inside ``checkpoint/``; RLlib fills the directory itself.
LEARNER_STATE = "learner.pt"
CONTENTS = f"{SUMMARY}, {PROGRESS}, {LEDGER}/, {CHECKPOINT}/"


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


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINT


def learner_state_path(run_dir: str | Path) -> Path:
    """The state file of an engine that saves its own (``checkpoint/learner.pt``)."""
    return checkpoint_dir(run_dir) / LEARNER_STATE
