"""Run ``iif-ray`` commands on a Ray cluster as Ray jobs.

``iif-ray submit -- iif-ray train ...`` is ``ray job submit`` with the project's conventions
built in: the command is checked locally first (a typo fails here, not after an upload), the
source checkout travels as the job's ``working_dir`` (so the cluster runs the code you have,
``tune_experiments/`` included), logs stream back, and the exit status is the job's.

Relative ``--out`` directories would land inside the job's temporary working directory on the
head node, which Ray garbage-collects; they are anchored under ``$HOME/iif-ray-runs`` on the
node that runs the driver instead. Absolute paths and URIs pass through unchanged; on a real
multi-node cluster use a shared file system so every node (Tune trials, ledgers) sees them.

Authentication: Ray's token authentication is left to Ray itself. A token in
``RAY_AUTH_TOKEN``, the file named by ``RAY_AUTH_TOKEN_PATH``, or ``~/.ray/auth_token`` is
sent with every request; a cluster that rejects the request produces one message saying how
to pass the token (see ``cluster/README.md``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS_ROOT = "$HOME/iif-ray-runs"
# Never shipped to the cluster: environments, run outputs, caches. (Ray also honours the
# checkout's .gitignore.)
WORKING_DIR_EXCLUDES = [
    ".venv/", ".git/", "runs/", "results/", "build/", "dist/", "*.egg-info/",
    "__pycache__/", ".pytest_cache/", ".ruff_cache/",
]
_TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


class SubmitError(ValueError):
    """A job that cannot be submitted as given; the message says what to change."""


def project_root() -> Path | None:
    """The source checkout this package runs from, or ``None`` for an installed wheel."""
    root = Path(__file__).resolve().parents[2]
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and 'name = "iif-ray"' in pyproject.read_text():
        return root
    return None


def runtime_env(env_vars: dict[str, str] | None = None) -> dict[str, Any]:
    """Ship the checkout as ``working_dir`` (or just the package when installed)."""
    root = project_root()
    if root is not None:
        env: dict[str, Any] = {"working_dir": str(root), "excludes": list(WORKING_DIR_EXCLUDES)}
    else:
        env = {"py_modules": [str(Path(__file__).resolve().parents[1])]}
    if env_vars:
        env["env_vars"] = dict(env_vars)
    return env


@dataclass
class JobCommand:
    """An ``iif-ray`` command line, validated and rewritten to run as a job's entrypoint."""

    argv: list[str]
    out: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def entrypoint(self) -> str:
        """A shell line; ``$HOME`` in an anchored ``--out`` expands on the cluster."""
        parts = ["python", "-m", "iif_ray"]
        for arg in self.argv:
            if RESULTS_ROOT in arg:  # "$HOME/..." or "--out=$HOME/...": let the shell expand it
                parts.append('"' + arg.replace('"', '\\"') + '"')
            else:
                parts.append(shlex.quote(arg))
        return " ".join(parts)


def parse_job_command(command: Sequence[str], parser: argparse.ArgumentParser) -> JobCommand:
    """Check an ``iif-ray ...`` command with the real parser and anchor its output directory.

    Args:
        command: ``["iif-ray", "train", ...]`` (the leading program name is optional).
        parser: the ``iif-ray`` argument parser (the CLI passes its own).

    Returns:
        The command as the job's entrypoint will run it.

    Raises:
        SubmitError: no command, ``submit`` itself, or arguments the parser rejects.
    """
    argv = list(command)
    if argv and Path(argv[0]).name in ("iif-ray", "iif_ray"):
        argv = argv[1:]
    if not argv:
        raise SubmitError("no command after '--'; e.g. iif-ray submit -- iif-ray train "
                          "--preset cartpole --out runs/cp")
    if argv[0] == "submit":
        raise SubmitError("'iif-ray submit' cannot submit itself")
    try:
        args = parser.parse_args(argv)
    except (SystemExit, ValueError) as e:  # the CLI's parser raises a one-line ValueError
        raise SubmitError(f"the job command does not parse ({e}): "
                          f"iif-ray {shlex.join(argv)}") from None
    job = JobCommand(argv=argv)
    flag, out = "--out", getattr(args, "out", None)
    if out is None and args.command == "report":
        out = args.directory
    if out is None and isinstance(getattr(args, "resume", None), str):
        flag, out = "--resume", args.resume  # train-lm --resume DIR: the run to continue
    if out is None:
        return job
    if "://" in out or os.path.isabs(out):
        job.out = out
        return job
    anchored = f"{RESULTS_ROOT}/{out}"
    job.notes.append(f"relative output directory {out!r} becomes {anchored} on the cluster")
    explicit = any(a == flag or a.startswith(f"{flag}=") for a in argv)
    job.argv = _replace_out(argv, out, anchored, flag, explicit=explicit)
    job.out = anchored
    return job


def _replace_out(argv: list[str], old: str, new: str, flag: str, explicit: bool) -> list[str]:
    if not explicit:  # the command used its default directory: name it explicitly
        if argv[0] == "report":
            return [argv[0], *[new if a == old else a for a in argv[1:]]]
        return [*argv, flag, new]
    out: list[str] = []
    skip = False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg == flag and i + 1 < len(argv):
            out += [flag, new]
            skip = True
        elif arg.startswith(f"{flag}="):
            out.append(f"{flag}={new}")
        else:
            out.append(arg)
    return out


def _auth_hint(error: Exception) -> str:
    text = str(error)
    if any(s in text.lower() for s in ("401", "403", "unauthor", "authentication", "token")):
        return (f"{text}\nthe cluster requires Ray's authentication token: set RAY_AUTH_TOKEN "
                "(or RAY_AUTH_TOKEN_PATH) to the head node's token, e.g. from `ray "
                "get-auth-token` run on the head")
    return text


def _token_available() -> bool:
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.expanduser("~/.ray/auth_token")
    return bool(os.environ.get("RAY_AUTH_TOKEN")) or os.path.isfile(path)


def job_client(address: str | None) -> Any:
    """A job client for ``address`` (``None``: ``RAY_ADDRESS``, then the local head).

    Ray's client sends its token only in token mode (``RAY_AUTH_MODE=token``); where a token
    is at hand and no mode is set, token mode is chosen, so the token is found as documented
    without a second variable.
    """
    if not os.environ.get("RAY_AUTH_MODE") and _token_available():
        # Ray reads the mode once, when its core library loads: set it before importing.
        os.environ["RAY_AUTH_MODE"] = "token"
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except Exception as e:  # connection refused, bad address, auth rejected
        where = address or os.environ.get("RAY_ADDRESS") or "the local default"
        raise SubmitError(f"cannot reach the Ray job API at {where}: {_auth_hint(e)}") from e


@dataclass
class SubmitResult:
    job_id: str
    status: str
    exit_code: int | None


def submit(
    job: JobCommand,
    *,
    address: str | None = None,
    wait: bool = True,
    env_vars: dict[str, str] | None = None,
    entrypoint_num_cpus: float | None = None,
    log: Callable[[str], None] = print,
    stream: Callable[[str], None] | None = None,
    poll_s: float = 1.0,
) -> SubmitResult:
    """Submit a parsed ``iif-ray`` command as a Ray job; with ``wait``, stream its logs.

    Raises:
        SubmitError: the cluster refused the submission (with a hint when it wants a token).
    """
    for note in job.notes:
        log(note)
    client = job_client(address)
    kwargs: dict[str, Any] = {}
    if entrypoint_num_cpus is not None:
        kwargs["entrypoint_num_cpus"] = entrypoint_num_cpus
    try:
        job_id = client.submit_job(entrypoint=job.entrypoint, runtime_env=runtime_env(env_vars),
                                   **kwargs)
    except Exception as e:
        raise SubmitError(f"job submission failed: {_auth_hint(e)}") from e
    log(f"submitted job {job_id}: {job.entrypoint}")
    if not wait:
        log(f"follow it with: ray job logs --follow {job_id}    (status: ray job status {job_id})")
        return SubmitResult(job_id, str(client.get_job_status(job_id)), None)
    try:
        if stream is not None:
            asyncio.run(_tail(client, job_id, stream))
        status = _wait(client, job_id, poll_s)
    except KeyboardInterrupt:
        log(f"stopped following; the job keeps running. Stop it with: ray job stop {job_id}")
        raise
    info = client.get_job_info(job_id)
    code = getattr(info, "driver_exit_code", None)
    if code is None:
        code = 0 if status == "SUCCEEDED" else 1
    if status != "SUCCEEDED" and info.message:
        log(f"job {job_id} {status.lower()}: {info.message}")
    if job.out is not None:
        log(f"results of job {job_id}: {job.out} (on the node that ran the driver)")
    return SubmitResult(job_id, status, int(code))


async def _tail(client, job_id: str, stream: Callable[[str], None]) -> None:
    async for chunk in client.tail_job_logs(job_id):
        stream(chunk)


def _wait(client, job_id: str, poll_s: float) -> str:
    while True:
        status = str(client.get_job_status(job_id)).split(".")[-1]
        if status in _TERMINAL:
            return status
        time.sleep(poll_s)


def stream_to_stdout(chunk: str) -> None:
    sys.stdout.write(chunk)
    sys.stdout.flush()
