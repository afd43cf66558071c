"""``progress.csv``: one row per round, its columns (the schema) given by the engine.

The run model owns the file and its one shared column, ``round`` (the round index, from 1);
each engine names the rest. Classic runs written before the two engines shared the file
call that column ``iteration``: readers rename it to ``round``, and a resumed run rewrites
its kept rows under the new name. The *ledger*'s ``iteration`` column keeps its name
(:mod:`iif_ray.ledger`): committed ledgers and users' readers depend on it.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from pathlib import Path

from iif_ray.atomic_files import replace_atomically
from iif_ray.run.layout import progress_path
from iif_ray.run.legacy import migrate_legacy_lm

ROUND = "round"
LEGACY_ROUND = "iteration"  # the classic engine's name for it before the engines shared it
_INT_FIELDS = (ROUND, "env_steps")


class ProgressWriter:
    """Appends ``progress.csv`` rows in the engine's schema, one whole row per round, so a
    crash keeps what ran. A field a row lacks is written as ``nan`` (e.g. evaluation figures in
    rounds without an evaluation).

    A row is one ``write`` on an ``O_APPEND`` descriptor; a write that fails part-way (a full
    disk) is cut back to the last whole row before the error propagates, and a new file's
    header is written whole or not at all, so a reader never meets half a row or a headless
    file.

    Args:
        run_dir: the run directory.
        fields: the engine's columns, ``round`` first.
        append: continue the file (after :func:`~iif_ray.run.rewind.rewind`) in the columns
            its header names (a run started before a column existed keeps its schema; the
            new column is left out of its rows); otherwise a new file with its header.
    """

    def __init__(self, run_dir: str | Path, fields: Sequence[str], *,
                 append: bool = False) -> None:
        if not fields or fields[0] != ROUND:
            raise ValueError(f"a progress schema starts with {ROUND!r}, got {list(fields)[:1]}")
        self.fields = tuple(fields)
        path = progress_path(run_dir)
        if append and path.exists():
            with path.open(newline="") as f:
                header_row = next(csv.reader(f), None)
            if header_row and header_row[0] == ROUND:
                self.fields = tuple(header_row)
        else:
            header = self._line({f: f for f in self.fields})
            replace_atomically(path, lambda tmp: tmp.write_bytes(header))
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)

    def _line(self, row: dict[str, object]) -> bytes:
        buf = io.StringIO()
        csv.DictWriter(buf, fieldnames=self.fields).writerow(row)
        return buf.getvalue().encode()

    def write(self, row: dict[str, float]) -> None:
        data = self._line({k: row.get(k, math.nan) for k in self.fields})
        whole = os.fstat(self._fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
        except OSError:
            os.ftruncate(self._fd, whole)  # no half row: the file ends at the last whole one
            raise

    def close(self) -> None:
        os.close(self._fd)


def read_progress_text(run_dir: str | Path) -> list[dict[str, str]]:
    """The rows as written (text), the round column under its current name, in file order.
    An absent file reads as no rows."""
    migrate_legacy_lm(run_dir)
    path = progress_path(run_dir)
    if not path.exists():
        return []
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [{(ROUND if k == LEGACY_ROUND else k): v for k, v in r.items()} for r in rows]


def round_of(row: dict[str, str]) -> int:
    return int(float(row[ROUND]))


def parse_rows(rows: list[dict[str, str]]) -> list[dict[str, float]]:
    """Text rows as numbers (``nan`` where a round has no value), in round order; ``round``
    and ``env_steps`` as integers."""
    parsed = [{k: (float(v) if v not in ("", None) else math.nan) for k, v in r.items()}
              for r in rows]
    for r in parsed:
        for k in _INT_FIELDS:
            if k in r:
                r[k] = int(r[k])
    return sorted(parsed, key=lambda r: r[ROUND])


def read_progress(run_dir: str | Path) -> list[dict[str, float]]:
    """``progress.csv`` rows as numbers (see :func:`parse_rows`); no file reads as no rows."""
    return parse_rows(read_progress_text(run_dir))
