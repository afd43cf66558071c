"""Who may write a run directory: an exclusive lock, and the only way one is replaced.

Every command that writes a directory (``train``, ``train-lm``, ``demo``, ``sweep``,
``evaluate``, ``diagnose``) takes it through :func:`own_dir` first, so that

* **two commands never write one directory at once.** The owner holds an exclusive
  ``flock`` on ``.iif-ray.lock``, whose text names its process id, host and start. A second
  command is refused in one line naming that owner while it runs; the kernel drops the lock
  of a process that ends however it ends (killed, crashed), and the next command takes the
  directory over with a message naming the owner that is gone.
* **nothing is deleted that is not ours.** ``--overwrite`` replaces only a directory that is
  recognisably one this project wrote (``run.json`` for a run; ``sweep.json``, a Tune
  ``tune/`` or a ``policies/`` folder for a sweep), and never the current directory, the home
  directory, a filesystem root or an ancestor of any of them, whatever it holds.
* **a refused command leaves nothing behind**: a directory it created is removed again.

The lock is re-entrant within one process: ``demo`` owns its directory and calls the
evaluator, which takes the same directory through this module too.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from iif_ray.run.layout import LOCK, RUN_SPEC, SWEEP_SPEC
from iif_ray.run.legacy import LEGACY_LM_RUN_SPEC

# What makes a directory recognisably ours, for --overwrite and for continuing a sweep.
RUN_MARKERS = (RUN_SPEC, LEGACY_LM_RUN_SPEC)
SWEEP_MARKERS = (SWEEP_SPEC, "tune", "policies")
NEW, CONTINUE, EXISTING = "new", "continue", "existing"
MODES = (NEW, CONTINUE, EXISTING)

_held: dict[Path, list[int]] = {}  # directories this process owns -> [depth, lock fd]


class OwnershipError(ValueError):
    """A directory cannot be owned (in use, foreign, unsafe to replace); one-line message."""


@dataclass(frozen=True)
class LockOwner:
    """Who holds (or last held) a lock, for messages: the lock itself is the kernel's."""

    pid: int
    host: str
    started: float  # when it took the lock (seconds since the epoch)
    command: str

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"{self.command or 'an iif-ray command'} (pid {self.pid} on {self.host}, " \
               f"since {when})"


def read_lock(directory: str | Path) -> LockOwner | None:
    """What the lock file says about its owner; ``None`` when there is no lock file or it
    says nothing readable (an owner that has not written it yet, or one cut short)."""
    try:
        d = json.loads((Path(directory) / LOCK).read_text())
        return LockOwner(int(d["pid"]), str(d["host"]), float(d["started"]),
                         str(d.get("command", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _holder(directory: Path) -> str:
    """The live owner, named as well as its lock file says (it may still be writing it)."""
    for _ in range(20):
        owner = read_lock(directory)
        if owner is not None:
            return owner.describe()
        time.sleep(0.05)
    return "another iif-ray command"


def _check_not_in_use(directory: Path) -> None:
    """Refuse a directory whose lock a live command holds, without writing anything."""
    try:
        fd = os.open(directory / LOCK, os.O_RDONLY)
    except OSError:
        return  # no lock file (or none we can open): the real attempt decides
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise OwnershipError(f"{str(directory)!r} is in use by {_holder(directory)}; "
                             "accepted: a directory no running command owns") from None
    finally:
        os.close(fd)


def _acquire(directory: Path, command: str, echo: Callable[[str], None]) -> int:
    """Take ``directory``'s lock; return the descriptor that holds it.

    The lock is an exclusive ``flock`` on ``.iif-ray.lock``, held while the command runs: the
    kernel drops it when the process ends however it ends, so a killed owner never blocks the
    next command, and two commands can never both hold it (no time window between checking a
    pid and writing a file). The file's text only names the owner for messages.

    Raises:
        OwnershipError: a live command holds the lock.
    """
    path = directory / LOCK
    for _ in range(10):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OwnershipError(f"{str(directory)!r} is in use by {_holder(directory)}; "
                                 "accepted: a directory no running command owns") from None
        try:  # the previous owner may have released (unlinked) it after our open: retry
            current = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            current = False
        if not current:
            os.close(fd)
            continue
        if os.fstat(fd).st_size:  # a lock file left by an owner that did not release it
            previous = read_lock(directory)
            who = previous.describe() if previous else "an earlier command"
            echo(f"taking over {str(directory)!r} from {who}, which is no longer running")
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
              "command": command}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        return fd
    raise OwnershipError(f"{str(directory)!r}: could not take its lock {str(path)!r}")


def _release(directory: Path, fd: int) -> None:
    # Unlinked while still held, so a command waiting on the old file sees it is stale.
    (directory / LOCK).unlink(missing_ok=True)
    os.close(fd)


def is_ours(directory: str | Path, markers: tuple[str, ...]) -> bool:
    """Whether ``directory`` holds one of ``markers`` (files or folders this project writes)."""
    return any((Path(directory) / m).exists() for m in markers)


def check_replaceable(directory: str | Path, given: str) -> None:
    """Refuse to empty a directory a user cannot want emptied.

    The current and home directories, a filesystem root and any of their ancestors are never
    replaced: a slip in ``--out`` must not cost a user their files.
    """
    d = Path(directory).resolve()
    protected = {Path.cwd().resolve(), Path.home().resolve()}
    for p in protected:
        if d == p or d in p.parents:
            raise OwnershipError(
                f"--out {given!r} is {'the' if d == p else 'an ancestor of the'} "
                f"{'current' if p == Path.cwd().resolve() else 'home'} directory; --overwrite "
                "replaces only a run directory of its own; accepted: a subdirectory")
    if d.parent == d:
        raise OwnershipError(f"--out {given!r} is a filesystem root; accepted: a subdirectory")


def _contents(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if p.name != LOCK]


def _empty(directory: Path) -> None:
    for p in _contents(directory):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def check_dir(out: str | Path, *, mode: str = NEW, overwrite: bool = False,
              markers: tuple[str, ...] = RUN_MARKERS, flag: str = "--out") -> None:
    """What :func:`own_dir` refuses, checked without writing anything: a command calls it
    before long preparations (building a default model) so a bad ``--out`` costs nothing.

    Raises:
        OwnershipError: ``out`` is empty, a file, foreign, unsafe to replace or in use.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; accepted: {list(MODES)}")
    given = str(out)
    if not given.strip():
        raise OwnershipError(f"{flag} {given!r} is an empty path; accepted: a directory path")
    directory = Path(out).resolve()
    if directory in _held:
        return
    if directory.exists() and not directory.is_dir():
        raise OwnershipError(f"{flag} {given!r} is a file, not a directory; accepted: a new "
                             "or empty directory path")
    if mode == EXISTING and not is_ours(directory, markers):
        raise OwnershipError(f"{flag} {given!r} holds none of {list(markers)}; accepted: a "
                             "directory an iif-ray command wrote")
    if directory.exists():
        _check_not_in_use(directory)
        _check_contents(directory, given, mode, overwrite, markers, flag)


@contextmanager
def own_dir(out: str | Path, *, mode: str = NEW, overwrite: bool = False,
            markers: tuple[str, ...] = RUN_MARKERS, command: str = "",
            flag: str = "--out", echo: Callable[[str], None] = print) -> Iterator[Path]:
    """Own ``out`` for the duration of the block: create or check it, lock it, release it.

    Args:
        out: the directory as the user gave it.
        mode: ``"new"``: a new run (the directory is absent or empty; with ``overwrite``, a
            directory of ours is emptied first); ``"continue"``: new, or one of ours to go on
            with (a sweep resumed by Tune); ``"existing"``: one of ours that must be there
            (``--resume``, ``evaluate``, ``diagnose``).
        overwrite: mode ``"new"`` only: replace a directory of ours.
        markers: the files whose presence makes a directory ours.
        command: how the lock names the owner (``iif-ray train``).
        flag: how messages name the directory's flag.
        echo: where a taken-over lock is reported.

    Yields:
        The directory, resolved.

    Raises:
        OwnershipError: ``out`` is empty, unsafe, foreign, in use or not a directory.
    """
    # Checked before the lock is written, so a refused directory is not even touched, and
    # again once it is ours (a file may have appeared in between).
    check_dir(out, mode=mode, overwrite=overwrite, markers=markers, flag=flag)
    directory, given = Path(out).resolve(), str(out)
    if directory in _held:  # this process owns it already (demo -> evaluate)
        _held[directory][0] += 1
        try:
            yield directory
        finally:
            _held[directory][0] -= 1
        return
    created = _first_missing(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OwnershipError(f"{flag} {given!r} cannot be created ({e.strerror or e}); "
                             "accepted: a new or empty directory path you can write") from None
    try:
        fd = _acquire(directory, command, echo)
    except (OSError, OwnershipError) as e:
        if created is not None:
            _remove_created(directory, created)
        if isinstance(e, OwnershipError):
            raise
        raise OwnershipError(f"{flag} {given!r} cannot be written ({e.strerror or e}); "
                             "accepted: a directory you can write") from None
    try:
        _check_contents(directory, given, mode, overwrite, markers, flag)
        if mode == NEW and overwrite:
            _empty(directory)
    except BaseException:
        _release(directory, fd)
        if created is not None:
            _remove_created(directory, created)
        raise
    _held[directory] = [1, fd]
    try:
        yield directory
    finally:
        del _held[directory]
        _release(directory, fd)


def _check_contents(directory: Path, given: str, mode: str, overwrite: bool,
                    markers: tuple[str, ...], flag: str) -> None:
    """Refuse a directory whose files are not ours to continue or replace."""
    if mode == EXISTING or not _contents(directory):
        return
    ours = is_ours(directory, markers)
    if mode == NEW and not overwrite:
        raise OwnershipError(
            f"output directory {given!r} is not empty; pass --overwrite to replace it" if ours
            else f"output directory {given!r} is not empty and holds no iif-ray run (none of "
                 f"{list(markers)}); accepted: a new or empty directory, or --overwrite on a "
                 "run directory")
    if not ours:
        raise OwnershipError(
            f"{flag} {given!r} holds files but no iif-ray run (none of {list(markers)}); it "
            "is not replaced; accepted: a new or empty directory, or one an iif-ray command "
            "wrote")
    if mode == NEW:
        check_replaceable(directory, given)


def _first_missing(directory: Path) -> Path | None:
    """The outermost of ``directory`` and its ancestors that does not exist yet (what
    ``mkdir(parents=True)`` creates), or ``None``."""
    missing = None
    for p in (directory, *directory.parents):
        if p.exists():
            break
        missing = p
    return missing


def _remove_created(directory: Path, created: Path) -> None:
    """Undo the directories this call created, leaf to ``created``: only the lock can be in
    them yet."""
    (directory / LOCK).unlink(missing_ok=True)
    for p in (directory, *directory.parents):
        try:
            p.rmdir()
        except OSError:
            return
        if p == created:
            return
