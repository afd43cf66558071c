"""A replaced file is whole: the old bytes or the new ones, never a mix, and no debris."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iif_ray.atomic_files import replace_atomically, write_json_atomically


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "progress.csv"
    target.write_text("old\n")

    def half_then_crash(tmp: Path) -> None:
        tmp.write_text("ne")
        raise KeyboardInterrupt  # what a user's Ctrl-C raises mid-write

    with pytest.raises(KeyboardInterrupt):
        replace_atomically(target, half_then_crash)
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["progress.csv"]


def test_a_write_that_succeeds_replaces_the_file_and_creates_parents(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "summary.json"
    assert write_json_atomically(target, {"round": 3, "path": tmp_path}) == target
    assert json.loads(target.read_text()) == {"round": 3, "path": str(tmp_path)}
    write_json_atomically(target, {"round": 4})
    assert json.loads(target.read_text()) == {"round": 4}
    assert [p.name for p in target.parent.iterdir()] == ["summary.json"]
