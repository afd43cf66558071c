"""Run-directory ownership: one owner at a time, nothing deleted that is not a run of ours."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from iif_ray.run import CONTINUE, EXISTING, NEW, SWEEP_MARKERS, OwnershipError, own_dir
from iif_ray.run.layout import LOCK, RUN_SPEC
from iif_ray.run.ownership import read_lock


def _files(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


_HOLD = (
    "import sys, time\n"
    "from iif_ray.run import own_dir, OwnershipError, EXISTING\n"
    "try:\n"
    "    with own_dir(sys.argv[1], mode=sys.argv[2], command='iif-ray train'):\n"
    "        print('owner', flush=True); time.sleep(float(sys.argv[3]))\n"
    "except OwnershipError as e:\n"
    "    print('refused', e, flush=True)\n")


def _start_owner(directory, mode: str = "new", hold_s: float = 60) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.Popen([sys.executable, "-c", _HOLD, str(directory), mode, str(hold_s)],
                            stdout=subprocess.PIPE, text=True, env=env)


@contextmanager
def _live_owner(directory, mode: str = "new"):
    """Another process that owns ``directory`` until the block ends."""
    proc = _start_owner(directory, mode)
    try:
        assert proc.stdout.readline().strip() == "owner"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def _own(directory, **kwargs) -> None:
    """Own ``directory`` and let it go at once (what a refused command gets no further than)."""
    with own_dir(directory, **kwargs):
        pass


def _write_lock(directory, pid: int, host: str | None = None) -> None:
    """A lock file as a killed owner leaves it: its text, no process holding it."""
    (directory / LOCK).write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(),
                                              "started": 0.0, "command": "iif-ray train"}))


def test_a_new_directory_is_locked_while_owned_and_released_after(tmp_path):
    with own_dir(tmp_path / "a" / "run", command="iif-ray train") as d:
        owner = read_lock(d)
        assert owner is not None and owner.pid == os.getpid()
        assert owner.host == socket.gethostname() and owner.command == "iif-ray train"
    assert not (tmp_path / "a" / "run" / LOCK).exists()
    assert (tmp_path / "a" / "run").is_dir()


def test_a_live_owner_is_refused_and_nothing_changes(tmp_path):
    run = tmp_path / "run"
    with _live_owner(run) as owner:
        (run / RUN_SPEC).write_text("{}")
        before = _files(run)
        for mode, overwrite in ((NEW, True), (NEW, False), (EXISTING, False), (CONTINUE, False)):
            with pytest.raises(OwnershipError, match=rf"in use by iif-ray train \(pid "
                                                     rf"{owner.pid} on {socket.gethostname()}"):
                _own(run, mode=mode, overwrite=overwrite, markers=(RUN_SPEC,))
        assert _files(run) == before


def test_a_killed_owners_lock_is_taken_over_with_a_message(tmp_path):
    run = tmp_path / "run"
    with _live_owner(run) as owner:
        (run / RUN_SPEC).write_text("{}")
    # killed: its lock file stays, the kernel's lock went with the process
    assert read_lock(run).pid == owner.pid
    said: list[str] = []
    with own_dir(run, mode=EXISTING, echo=said.append):
        assert read_lock(run).pid == os.getpid()
    assert len(said) == 1 and f"pid {owner.pid}" in said[0]
    assert "no longer running" in said[0]
    _write_lock(run, 12345, host="elsewhere")  # an owner on another host, gone as well
    said.clear()
    _own(run, mode=EXISTING, echo=said.append)
    assert said and "pid 12345 on elsewhere" in said[0]


def test_a_truncated_lock_reads_as_a_dead_owner(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / RUN_SPEC).write_text("{}")
    (run / LOCK).write_text('{"pid": 1')
    said: list[str] = []
    _own(run, mode=EXISTING, echo=said.append)
    assert said


def test_ownership_is_reentrant_within_one_process(tmp_path):
    with own_dir(tmp_path / "demo", markers=SWEEP_MARKERS) as d:
        (d / "sweep.json").write_text("{}")
        with own_dir(d, mode=EXISTING, markers=SWEEP_MARKERS):
            assert (d / LOCK).exists()
        assert (d / LOCK).exists(), "the inner owner must not release the outer's lock"
    assert not (d / LOCK).exists()


def test_overwrite_replaces_only_a_directory_of_ours(tmp_path):
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "a.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(OwnershipError, match="holds files but no iif-ray run"):
        _own(foreign, overwrite=True)
    assert _files(foreign) == {"a.jpg": b"\xff\xd8"} and not (foreign / LOCK).exists()

    ours = tmp_path / "run"
    ours.mkdir()
    (ours / RUN_SPEC).write_text("{}")
    (ours / "progress.csv").write_text("round\n1\n")
    with own_dir(ours, overwrite=True) as d:
        assert sorted(p.name for p in d.iterdir()) == [LOCK]


@pytest.mark.parametrize("where", ["cwd", "home", "ancestor", "root"])
def test_overwrite_never_empties_cwd_home_an_ancestor_or_a_root(tmp_path, monkeypatch, where):
    home = tmp_path / "home"
    cwd = home / "work" / "project"
    cwd.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    for d in (home, cwd):  # each looks like a run of ours, the worst case
        (d / RUN_SPEC).write_text("{}")
        (d / "notes.txt").write_text("keep me")
    target = {"cwd": ".", "home": str(home), "ancestor": "..", "root": "/"}[where]
    before = _files(home)
    if where == "root":
        # Refused before anything is looked at: "/" is no directory of ours (no run.json).
        with pytest.raises(OwnershipError), own_dir(target, overwrite=True):
            pass
    else:
        (cwd.parent / RUN_SPEC).write_text("{}")
        before = _files(home)
        with pytest.raises(OwnershipError, match="accepted: a subdirectory"):
            _own(target, overwrite=True)
    assert _files(home) == before


@pytest.mark.parametrize("path", ["", "  "])
def test_an_empty_path_is_refused(tmp_path, monkeypatch, path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(OwnershipError, match="is an empty path"), own_dir(path, overwrite=True):
        pass
    assert _files(tmp_path) == {"keep.txt": b"x"}


def test_a_refused_or_failed_command_leaves_no_lock_and_no_new_directory(tmp_path):
    with pytest.raises(OwnershipError, match="holds none of"):
        _own(tmp_path / "a" / "b" / "run", mode=EXISTING)
    assert not (tmp_path / "a").exists(), "directories made for a refused command are removed"
    run = tmp_path / "run"
    with pytest.raises(RuntimeError), own_dir(run):
        raise RuntimeError("the command failed")
    assert run.is_dir(), "a directory a command started in is kept (its files may matter)"
    assert not (run / LOCK).exists()


def test_existing_mode_needs_a_marker_and_continue_refuses_foreign_files(tmp_path):
    with pytest.raises(OwnershipError, match="holds none of"):
        _own(tmp_path / "nothing", mode=EXISTING)
    assert not (tmp_path / "nothing").exists()
    (tmp_path / "mixed").mkdir()
    (tmp_path / "mixed" / "thesis.tex").write_text("x")
    with pytest.raises(OwnershipError, match="holds files but no iif-ray run"):
        _own(tmp_path / "mixed", mode=CONTINUE, markers=SWEEP_MARKERS)
    (tmp_path / "mixed" / "sweep.json").write_text("{}")
    with own_dir(tmp_path / "mixed", mode=CONTINUE, markers=SWEEP_MARKERS) as d:
        assert (d / "thesis.tex").exists(), "continuing a sweep deletes nothing"


def test_processes_racing_for_one_directory_get_one_owner(tmp_path):
    """All see no directory; the kernel's lock goes to exactly one."""
    procs = [_start_owner(tmp_path / "run", hold_s=10) for _ in range(3)]
    outs = sorted(p.communicate(timeout=60)[0].split()[0] for p in procs)
    assert outs == ["owner", "refused", "refused"]
