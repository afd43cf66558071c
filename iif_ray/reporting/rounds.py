"""The round row and the files that hold the raw figures: ``rounds.csv``, ``evals.csv``
and an LM run's per-round progress file.

Every benchmark trial (ours through RLlib, SB3's through its own loop, an LM run) reports one
flat row per round; a sweep exports them as ``rounds.csv``, one row per (env, algo, seed,
round), which the report reads. This module is the only place that names those columns, and it
imports neither Ray nor an engine, so a report regenerates from committed files alone (turning
an RLlib result into a record is :mod:`iif_ray.experiments.results`' job).

``train_s`` is the round's wall-clock without evaluation (sampling + filtering + update), the
quantity wall-clock comparisons (RT_peak) use.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from iif_ray.atomic_files import replace_atomically
from iif_ray.run import read_progress

ROUND_FIELDS = ("env_steps", "eval_return", "eval_episodes", "train_return", "frac_dropped",
                 "sampling_s", "scoring_s", "filter_s", "update_s", "eval_s", "train_s")
RUN_KEYS = ("env", "algo", "seed", "round")
ROUND_COLUMNS = RUN_KEYS + ROUND_FIELDS
ROUNDS_CSV = "rounds.csv"

# Evaluations made after training from policy snapshots (``iif-ray evaluate``), keyed like the
# rounds; where a run has them, they replace the in-trial ``eval_return``.
# ``snapshot``: a digest of the evaluated weights file; a snapshot rewritten since (a trial
# resumed from an earlier checkpoint retrains those rounds) is evaluated again.
EVAL_FIELDS = ("eval_return", "eval_se", "eval_episodes", "eval_method", "eval_s", "snapshot")
EVAL_COLUMNS = RUN_KEYS + EVAL_FIELDS
EVALS_CSV = "evals.csv"

LM_ENV = "detox-mini"  # the environment name an LM sweep's rows carry


def round_row(**values: float) -> dict[str, float]:
    """A complete record, every field a float.

    Raises:
        ValueError: a field is missing or unknown.
    """
    if set(values) != set(ROUND_FIELDS):
        raise ValueError(f"round row: missing {sorted(set(ROUND_FIELDS) - set(values))}, "
                         f"unknown {sorted(set(values) - set(ROUND_FIELDS))}")
    return {k: as_float(values[k]) for k in ROUND_FIELDS}


def merge_rounds(path: Path, new: pd.DataFrame) -> pd.DataFrame:
    """Replace ``new``'s (env, algo, seed) runs inside an existing rounds file, keep the rest.

    The file is keyed by (env, algo, seed, round); should a key still repeat, the latest row
    wins, so the file never holds a round twice.
    """
    if path.exists() and not new.empty:
        old = pd.read_csv(path)
        key = ["env", "algo", "seed"]
        keep = ~old.set_index(key).index.isin(new.set_index(key).index.unique())
        new = pd.concat([old[keep], new], ignore_index=True)
    elif path.exists():
        new = pd.read_csv(path)
    new = new.drop_duplicates(list(RUN_KEYS), keep="last").sort_values(list(RUN_KEYS))
    _replace_file(path, new)
    return new


def _replace_file(path: Path, frame: pd.DataFrame) -> None:
    replace_atomically(path, lambda tmp: frame.to_csv(tmp, index=False, float_format="%.8g"))


def read_table(path: Path, columns: tuple[str, ...], what: str) -> pd.DataFrame:
    """A CSV of ours with every row whole: a line with fewer or more fields than the header
    (a file cut short by a kill or a full disk) is named, not read as missing values.

    Raises:
        ValueError: not UTF-8 CSV, a row with the wrong number of fields, or missing columns;
            the message names the file (and the line) and the accepted columns.
    """
    accepted = f"accepted: {what} (CSV with columns {', '.join(columns)})"
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if not header:
                raise ValueError(f"{str(path)!r} is empty; {accepted}")
            for record in reader:
                if record and len(record) != len(header):
                    raise ValueError(f"{str(path)!r} line {reader.line_num} has {len(record)} "
                                     f"of {len(header)} fields (cut short?); {accepted}")
        frame = pd.read_csv(path)
    except (UnicodeDecodeError, csv.Error, pd.errors.ParserError) as e:
        raise ValueError(f"{str(path)!r} is not a CSV file ({type(e).__name__}); "
                         f"{accepted}") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{str(path)!r} lacks columns {missing}; {accepted}")
    return frame


def read_evals(path: str | Path) -> pd.DataFrame:
    """An ``evals.csv`` (empty frame with its columns when the file does not exist).

    A repeated (env, algo, seed, round) counts once, its latest row. A row whose
    ``eval_return`` is NaN (an evaluation that failed) is kept: ``iif-ray evaluate``
    evaluates that point again, and the report leaves it out until then.

    Raises:
        ValueError: a file that is not CSV, has a row cut short, or lacks evaluation columns.
    """
    path = Path(path)
    if not path.exists():
        return pd.DataFrame(columns=list(EVAL_COLUMNS))
    frame = read_table(path, EVAL_COLUMNS, "the evals.csv iif-ray evaluate writes")
    return frame.drop_duplicates(list(RUN_KEYS), keep="last")  # as merge_evals keeps them


def merge_evals(path: str | Path, new: pd.DataFrame) -> pd.DataFrame:
    """Add evaluation rows to ``evals.csv``; a repeated (env, algo, seed, round) keeps the new."""
    path = Path(path)
    parts = [f for f in (read_evals(path), new[list(EVAL_COLUMNS)]) if not f.empty]
    frame = pd.concat(parts, ignore_index=True) if parts else new[list(EVAL_COLUMNS)]
    frame = frame.drop_duplicates(list(RUN_KEYS), keep="last").sort_values(list(RUN_KEYS))
    _replace_file(path, frame)
    return frame


def load_rounds(directory: str | Path) -> pd.DataFrame:
    """All ``*rounds*.csv`` files of a results directory, concatenated.

    Raises:
        FileNotFoundError: the directory holds none.
        ValueError: a file that is empty, not CSV, has a row cut short, lacks round-record
            columns or holds no row.

    Within a file a repeated (env, algo, seed, round) counts once: its latest (last) row.
    """
    if not Path(directory).is_dir():
        raise FileNotFoundError(f"{str(directory)!r} is not a directory; accepted: a sweep's "
                                "--out directory holding rounds.csv")
    files = sorted(Path(directory).glob("*rounds*.csv"))
    if not files:
        raise FileNotFoundError(f"no *rounds*.csv in {str(directory)!r}; run a sweep first")
    frames = []
    for f in files:
        frame = read_table(f, ROUND_COLUMNS, "a sweep's rounds.csv")
        if frame.empty:
            raise ValueError(f"{str(f)!r} holds no rounds; accepted: a sweep's rounds.csv "
                             "with at least one finished round")
        # One row per (env, algo, seed, round), the latest: a round trained again after a
        # resume, appended by hand or by an older writer, is not counted twice.
        frames.append(frame.drop_duplicates(list(RUN_KEYS), keep="last"))
    return pd.concat(frames, ignore_index=True)


def as_float(x: Any, default: float = math.nan) -> float:
    """``x`` as a float, ``default`` where it is missing or not a number: a trial's result may
    lack a figure (no evaluation that round), and the record keeps a NaN, not a crash."""
    try:
        return float(x)
    except (TypeError, ValueError):
        return default


def run_name(algo: str, seed: int) -> str:
    """An LM trial's run directory under the sweep's ``<out>/lm``: ``<algo>-seed<k>``; written
    by the sweep, parsed back by :func:`progress_table`, so both sides share this one form."""
    return f"{algo}-seed{seed}"


_RUN_NAME = re.compile(r"^(?P<algo>.+)-seed(?P<seed>\d+)$")


def progress_table(runs_dir: str | Path) -> pd.DataFrame:
    """Every LM run's progress file under ``runs_dir`` (the sweep's ``<out>/lm``) as one tidy
    table in round order, with ``algo`` and ``seed`` columns from the run directory's name.

    Read through the run model (:func:`iif_ray.run.read_progress`, Ray-free and engine-free),
    so a run directory the LM engine wrote under its old file names is migrated first, as
    every other reader of it does; an empty cell (a round without evaluation) reads as NaN.
    """
    frames = []
    for run in sorted(p for p in Path(runs_dir).glob("*") if p.is_dir()):
        m = _RUN_NAME.match(run.name)
        rows = pd.DataFrame(read_progress(run)) if m else pd.DataFrame()
        if rows.empty:
            continue
        frames.append(rows.assign(algo=m["algo"], seed=int(m["seed"])))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
