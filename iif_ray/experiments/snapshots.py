"""Policy snapshots: every round's policy weights, so evaluation can run after training.

Evaluation decides what a benchmark can resolve, and it costs more than training when it is
precise (hundreds of complete episodes per point). Benchmark trials therefore save the policy
network after every round (and the initial one as round 0) and evaluate nothing themselves;
:mod:`iif_ray.evaluation` scores the snapshots afterwards, on the same episode seeds for every
run, and never inside the timed rounds. The evaluation protocol can then change without
retraining, and a sweep interrupted at any point loses no evaluation.

Layout (this module is the only place that names it)::

    <out>/policies/<env>/<algo>/seed<k>/module_spec.pkl   # how to rebuild the network
    <out>/policies/<env>/<algo>/seed<k>/round_0001.pt     # torch state_dict of the policy network
    <out>/policies/<env>/<algo>/seed<k>/plan.json         # {"final_round": N}: the run's last round

The plan lets an evaluator running beside an unfinished sweep tell the run's final round from
its newest one so far: only the final round joins the evaluation grid off its cadence.

A trial resumed from a checkpoint re-trains the rounds after it and overwrites their
snapshots (the latest wins, as in ``rounds.csv``); round 0 is written only once.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from iif_ray.atomic_files import replace_atomically

SNAPSHOT_ROOT = "policies"  # under a sweep's --out directory
SPEC_FILE = "module_spec.pkl"
PLAN_FILE = "plan.json"
_ROUND_RE = re.compile(r"^round_(\d{4,})\.pt$")


def snapshot_root(out: str | Path) -> Path:
    """Where a sweep writing to ``out`` keeps its snapshots (absolute: trials run elsewhere)."""
    return Path(out).resolve() / SNAPSHOT_ROOT


def run_snapshot_dir(root: str | Path, env: str, algo: str, seed: int) -> Path:
    return Path(root) / env / algo / f"seed{int(seed)}"


def round_file(run_dir: str | Path, round_: int) -> Path:
    return Path(run_dir) / f"round_{int(round_):04d}.pt"


def write_snapshot(run_dir: str | Path, round_: int, state_dict: dict[str, torch.Tensor],
                   *, overwrite: bool = True) -> Path | None:
    """Save one round's policy weights; ``overwrite=False`` keeps an existing file.

    Returns:
        The file written, or ``None`` when it existed and ``overwrite`` was false.
    """
    path = round_file(run_dir, round_)
    if not overwrite and path.exists():
        return None
    cpu = {k: v.detach().to("cpu").clone() for k, v in state_dict.items()}
    replace_atomically(path, lambda tmp: torch.save(cpu, tmp))
    return path


def write_spec(run_dir: str | Path, spec: Any) -> Path:
    """Save the (picklable) ``RLModuleSpec`` the snapshots' network is rebuilt from."""
    path = Path(run_dir) / SPEC_FILE
    replace_atomically(path, lambda tmp: tmp.write_bytes(pickle.dumps(spec)))
    return path


def write_plan(run_dir: str | Path, final_round: int) -> Path:
    """Record the round the run will stop at (known to the sweep before it trains)."""
    path = Path(run_dir) / PLAN_FILE
    text = json.dumps({"final_round": int(final_round)})
    replace_atomically(path, lambda tmp: tmp.write_text(text))
    return path


def read_spec(run_dir: str | Path) -> Any:
    return pickle.loads((Path(run_dir) / SPEC_FILE).read_bytes())  # our own file, never user input


def _digest(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()[:16]


def snapshot_digest(path: str | Path) -> str:
    """A short digest of a snapshot file: it changes when the round is trained again."""
    return _digest(Path(path).read_bytes())


def load_snapshot(path: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """The weights and the digest of the very bytes they were read from (one read)."""
    data = Path(path).read_bytes()
    weights = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    return weights, _digest(data)


def read_snapshot(path: str | Path) -> dict[str, torch.Tensor]:
    return load_snapshot(path)[0]


@dataclass(frozen=True)
class SnapshotRun:
    """One training run's snapshots: where they are and which rounds exist."""

    env: str
    algo: str
    seed: int
    path: Path

    def rounds(self) -> list[int]:
        found = (_ROUND_RE.match(p.name) for p in self.path.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def final_round(self) -> int | None:
        """The planned last round, or ``None`` for runs saved before plans existed."""
        path = self.path / PLAN_FILE
        if not path.exists():
            return None
        return int(json.loads(path.read_text())["final_round"])


def find_runs(root: str | Path) -> Iterator[SnapshotRun]:
    """Every ``<env>/<algo>/seed<k>`` directory under ``root`` that holds a module spec."""
    root = Path(root)
    for spec in sorted(root.glob(f"*/*/seed*/{SPEC_FILE}")):
        run = spec.parent
        yield SnapshotRun(env=run.parent.parent.name, algo=run.parent.name,
                          seed=int(run.name.removeprefix("seed")), path=run)
