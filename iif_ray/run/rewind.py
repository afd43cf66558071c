"""Put an interrupted run back at its last checkpoint, whichever engine wrote it."""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from iif_ray.atomic_files import replace_atomically
from iif_ray.ledger import remove_rounds_after
from iif_ray.run.layout import (
    SUMMARY,
    checkpoint_dir,
    ledger_dir,
    old_checkpoint_dir,
    progress_path,
)
from iif_ray.run.legacy import migrate_legacy_lm
from iif_ray.run.progress import parse_rows, read_progress_text, round_of

# Given ``checkpoint/``, the engine restores its own state from it and returns the round
# the checkpoint was taken after (``None``: nothing there it can restore).
Restore = Callable[[Path], "int | None"]


def recover_checkpoint(run_dir: str | Path) -> None:
    """Put back the previous checkpoint when a run was killed while swapping in a new one
    (``checkpoint/`` moved aside, the new one not yet renamed into place)."""
    old = old_checkpoint_dir(run_dir)
    if old.is_dir() and not checkpoint_dir(run_dir).exists():
        os.replace(old, checkpoint_dir(run_dir))


def rewind(run_dir: str | Path, fields: Sequence[str], restore: Restore | None
           ) -> list[dict[str, float]]:
    """Make ``run_dir`` hold exactly the rounds up to its checkpoint.

    ``restore`` (when given and ``checkpoint/`` exists) restores the engine's state and says
    which round that was; without it the run restarts from round 1. Then the progress rows
    up to that round are kept as written (the file replaced whole, so a kill here loses none
    of them; columns in the engine's ``fields``), ledger files of later rounds removed (they
    are trained again) and the summary too (the run is not complete until it ends again).

    Returns:
        The progress rows kept, as numbers, in round order.
    """
    migrate_legacy_lm(run_dir)
    run = Path(run_dir)
    recover_checkpoint(run)
    done = 0
    if restore is not None and checkpoint_dir(run).is_dir():
        done = restore(checkpoint_dir(run)) or 0
    rows = [r for r in read_progress_text(run) if round_of(r) <= done]

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(fields))
            writer.writeheader()
            writer.writerows({k: r.get(k, "") for k in fields} for r in rows)

    replace_atomically(progress_path(run), write)
    remove_rounds_after(str(ledger_dir(run)), done)
    (run / SUMMARY).unlink(missing_ok=True)
    return parse_rows(rows)
