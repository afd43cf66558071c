"""Killing a test's processes for real: everything it started, Ray's daemons and workers too.

A process started with a unique marker in its environment passes it on to every child (Ray's
GCS, raylet and workers included), so the marker finds them all; killing only the driver's
process group can leave Ray workers running, still writing into the directory under test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path


def new_marker() -> tuple[str, str]:
    """A fresh ``(name, value)`` environment marker."""
    return "IIF_RAY_TEST_MARK", uuid.uuid4().hex


def marked_pids(marker: str) -> list[int]:
    """Processes whose environment holds ``marker`` (``NAME=value``), this one excepted."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if marker.encode() in (proc / "environ").read_bytes():
                pids.append(int(proc.name))
    return pids


def kill_marked(marker: str, grace_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL, every marked process; wait until none is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in marked_pids(marker):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.time() + grace_s
        while marked_pids(marker) and time.time() < deadline:
            time.sleep(0.2)


def start_marked(cmd: list[str], env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """Start ``cmd`` with a fresh marker; return the process and the marker."""
    name, value = new_marker()
    proc = subprocess.Popen(cmd, env={**env, name: value}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    return proc, f"{name}={value}"


def kill_hard(proc: subprocess.Popen, marker: str) -> None:
    """SIGKILL the command and everything it started, as a crash or power cut would."""
    for pid in marked_pids(marker):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()
    kill_marked(marker)
