"""Put an interrupted run back at its last checkpoint, whichever engine wrote it."""

from __future__ import annotations

import csv
import json
import os
import pickletools
import zipfile
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


def check_checkpoint(run_dir: str | Path) -> None:
    """Every file of ``checkpoint/`` read to its end, without loading anything.

    A checkpoint cut short (a copy interrupted, a full disk) would otherwise fail inside the
    engine's restore, after Ray started, in a traceback that names no file. Pickles are
    walked opcode by opcode (nothing is executed), JSON parsed, zip files (``torch.save``)
    checked member by member against their CRCs.

    Raises:
        ValueError: a file that does not read to its end, named with what to do.
    """
    root = checkpoint_dir(run_dir)
    if not root.is_dir():
        return
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        problem = _unreadable(path)
        if problem:
            raise ValueError(f"checkpoint file {str(path)!r} {problem}; accepted: a checkpoint "
                             f"as the run wrote it (remove {str(root)!r} to resume from "
                             "round 1)")


def _unreadable(path: Path) -> str | None:
    """Why ``path`` does not read to its end as its kind of file; ``None`` when it does."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                bad = z.testzip()
            return None if bad is None else f"has a damaged member {bad!r}"
        if path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
        elif path.suffix in (".pkl", ".pickle"):
            with path.open("rb") as f:
                for _ in pickletools.genops(f):
                    pass
        elif path.suffix == ".pt":
            return "is truncated or not a torch checkpoint (no zip directory at its end)"
    except (ValueError, EOFError, zipfile.BadZipFile, UnicodeDecodeError, OSError) as e:
        return f"is truncated or damaged ({type(e).__name__}: {str(e)[:80]})"
    return None


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
