"""The run model both engines fill: one run directory, one set of file names, no Ray.

Layout of a run directory (:mod:`.layout` names the files)::

    run.json         what was asked for: the engine's spec and its ``kind`` ("classic" for
                     the RLlib engine, "lm" for the language-model engine), written first
    progress.csv     one row per round, ``round`` first, the other columns the engine's
                     (:mod:`.progress`), appended and flushed as the run goes
    ledger/          per-record Parquet ledgers, one file per round (:mod:`iif_ray.ledger`)
    checkpoint/      the engine's checkpoint, every few rounds and at the end: RLlib's own
                     directory (classic), or ``learner.pt`` (LM); replaced atomically
    summary.json     written last, atomically: its presence means the run completed
    .iif-ray.lock    the owning command's pid and host, while it runs (:mod:`.ownership`)

A run that fails leaves no ``summary.json``, so nothing half-written looks complete; its
``run.json``, ``checkpoint/``, ledger and progress let ``--resume`` continue it
(:func:`.rewind.rewind`, with the engine restoring its own state) and ``iif-ray diagnose``
read it, telling the kinds apart by :func:`.spec.run_kind`.

Existing LM run directories (``lm_run.json``, ``lm_progress.csv``, ``lm_checkpoint.pt``,
``lm_summary.json``) are *migrated* to these names the first time the run model reads or
resumes them (:mod:`.legacy`), so every reader and writer knows one set of names.

This package imports neither Ray nor either engine: the engines (``iif_ray.rllib`` with
``iif_ray.driver``, and ``iif_ray.lm``) depend on it, never the other way round.
"""

from iif_ray.run.layout import (
    CHECKPOINT,
    CONTENTS,
    LEDGER,
    PROGRESS,
    RUN_SPEC,
    SUMMARY,
    checkpoint_dir,
    learner_state_path,
    ledger_dir,
    old_checkpoint_dir,
    progress_path,
)
from iif_ray.run.ownership import (
    CONTINUE,
    EXISTING,
    NEW,
    RUN_MARKERS,
    SWEEP_MARKERS,
    OwnershipError,
    check_dir,
    own_dir,
)
from iif_ray.run.progress import ROUND, ProgressWriter, read_progress
from iif_ray.run.rewind import check_checkpoint, rewind
from iif_ray.run.spec import (
    CLASSIC,
    KINDS,
    LM,
    RunKindError,
    read_run_spec,
    run_kind,
    write_run_spec,
)
from iif_ray.run.summary import is_complete, read_summary, read_summary_or_spec, write_summary

__all__ = [
    "CHECKPOINT",
    "CLASSIC",
    "CONTENTS",
    "CONTINUE",
    "EXISTING",
    "KINDS",
    "LEDGER",
    "LM",
    "NEW",
    "PROGRESS",
    "ROUND",
    "RUN_MARKERS",
    "RUN_SPEC",
    "SUMMARY",
    "SWEEP_MARKERS",
    "OwnershipError",
    "ProgressWriter",
    "RunKindError",
    "check_checkpoint",
    "check_dir",
    "checkpoint_dir",
    "is_complete",
    "learner_state_path",
    "ledger_dir",
    "old_checkpoint_dir",
    "own_dir",
    "progress_path",
    "read_progress",
    "read_run_spec",
    "read_summary",
    "read_summary_or_spec",
    "rewind",
    "run_kind",
    "write_run_spec",
    "write_summary",
]
