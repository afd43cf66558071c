"""``summary.json``: written last, atomically; its presence means the run completed."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from iif_ray.atomic_files import write_json_atomically
from iif_ray.run.layout import RUN_SPEC, SUMMARY
from iif_ray.run.legacy import migrate_legacy_lm
from iif_ray.run.spec import read_run_spec


def write_summary(run_dir: str | Path, summary: dict[str, Any]) -> Path:
    """Write ``summary.json`` atomically: it is what marks a run as complete."""
    return write_json_atomically(Path(run_dir) / SUMMARY, summary)


def is_complete(run_dir: str | Path) -> bool:
    migrate_legacy_lm(run_dir)
    return (Path(run_dir) / SUMMARY).is_file()


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    """The summary of a completed run.

    Raises:
        FileNotFoundError: the directory holds no completed run.
    """
    if not is_complete(run_dir):
        raise FileNotFoundError(f"{str(run_dir)!r} is not a completed run (no {SUMMARY})")
    return json.loads((Path(run_dir) / SUMMARY).read_text())


def read_summary_or_spec(run_dir: str | Path,
                         static_summary: Callable[[dict[str, Any]], dict[str, Any]]
                         ) -> dict[str, Any]:
    """``summary.json`` of a completed run, else what is known of an interrupted one.

    Args:
        run_dir: the run directory.
        static_summary: the engine's summary fields known before training, from its spec.

    Raises:
        FileNotFoundError: the directory holds neither.
    """
    if is_complete(run_dir):
        return read_summary(run_dir)
    try:
        return {**static_summary(read_run_spec(run_dir)), "completed": False}
    except FileNotFoundError:
        raise FileNotFoundError(f"{str(run_dir)!r} is not a run (no {SUMMARY}, no "
                                f"{RUN_SPEC})") from None
