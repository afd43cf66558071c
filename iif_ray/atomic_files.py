"""Whole-or-nothing file writes, the one way every run file is replaced.

A run is killed at any moment (Tune stops trials, sessions end, users press Ctrl-C), and a
resumed run trusts what it reads. So a file is written beside its final name and renamed over
it: ``os.replace`` is atomic within a filesystem, so a reader sees the old file or the new one,
never half of either, and a kill leaves at worst a stray hidden ``.tmp`` file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def replace_atomically(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` on a sibling temporary path, then rename it to ``path``.

    The temporary name carries the process id: trials that share a directory (Tune runs them
    side by side) never write into each other's temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only left when ``write`` raised
    return path


def write_json_atomically(path: str | Path, data: dict[str, Any]) -> Path:
    """``data`` as indented JSON (values JSON lacks written as strings), replaced atomically."""
    return replace_atomically(
        path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, default=str)))
