"""Run directories the LM engine wrote before it shared the run model's file names.

Those directories name their files ``lm_run.json``, ``lm_progress.csv``,
``lm_checkpoint.pt`` and ``lm_summary.json``. They are *migrated*, once, the first time the
run model touches them (reading the spec, the kind, progress or summary; writing the spec;
rewinding for ``--resume``): each file is renamed to its run-model name and ``run.json``
gains ``"kind": "lm"``. Migrating instead of reading both sets of names keeps every reader
and writer on one set, and a resumed run never splits its rows over two progress files.

Each step is an atomic rename and the spec goes last, so a migration cut short is finished
by the next call (the old spec is still there to say the directory needs it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from iif_ray.atomic_files import write_json_atomically
from iif_ray.run.layout import PROGRESS, RUN_SPEC, SUMMARY, learner_state_path

LM_KIND = "lm"
LEGACY_LM_RUN_SPEC = "lm_run.json"
LEGACY_LM_FILES = {"lm_progress.csv": PROGRESS, "lm_summary.json": SUMMARY}
LEGACY_LM_CHECKPOINT = "lm_checkpoint.pt"


def is_legacy_lm(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` still holds an LM run under the old file names."""
    return (Path(run_dir) / LEGACY_LM_RUN_SPEC).is_file()


def migrate_legacy_lm(run_dir: str | Path) -> bool:
    """Rename a legacy LM run's files to the run model's names; returns whether it did.

    A directory that is not a legacy LM run is left alone.
    """
    run = Path(run_dir)
    if not is_legacy_lm(run):
        return False
    old_state = run / LEGACY_LM_CHECKPOINT
    if old_state.is_file():
        new_state = learner_state_path(run)
        new_state.parent.mkdir(exist_ok=True)
        os.replace(old_state, new_state)
    for old, new in LEGACY_LM_FILES.items():
        if (run / old).is_file():
            os.replace(run / old, run / new)
    spec = json.loads((run / LEGACY_LM_RUN_SPEC).read_text())
    write_json_atomically(run / RUN_SPEC, {"kind": LM_KIND, **spec})
    (run / LEGACY_LM_RUN_SPEC).unlink()
    return True
