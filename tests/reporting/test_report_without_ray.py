"""``iif-ray report`` on committed files runs without Ray: the contract in ``pyproject.toml``
says so statically, this checks it at run time, through the command line, on a small slice of
the committed evidence and LM sweep."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

from iif_ray.reporting.rounds import EVALS_CSV, ROUNDS_CSV
from iif_ray.run import PROGRESS

ROOT = Path(__file__).resolve().parents[2]
EVIDENCE = ROOT / "results" / "evidence"
LM_SWEEP = ROOT / "results" / "lm" / "sweep"
RUNS = [("ppo", 0), ("ppo", 1), ("iif", 0), ("iif", 1)]


def _slice(directory: Path) -> None:
    """FrozenLake's evaluated PPO and IIF runs (seeds 0-1) and the same LM runs, in one
    results directory: evidence, in-training and LM sections all have something to show."""
    keep = pd.DataFrame(RUNS, columns=["algo", "seed"])
    evidence = pd.read_csv(EVIDENCE / ROUNDS_CSV)
    lm = pd.read_csv(LM_SWEEP / ROUNDS_CSV)
    rounds = pd.concat([evidence[evidence.env == "frozenlake"], lm]).merge(keep)
    rounds.to_csv(directory / ROUNDS_CSV, index=False)
    evals = pd.read_csv(EVIDENCE / EVALS_CSV)
    evals[evals.env == "frozenlake"].merge(keep).to_csv(directory / EVALS_CSV, index=False)
    for algo, seed in RUNS:
        run = LM_SWEEP / "lm" / f"{algo}-seed{seed}"
        (directory / "lm" / run.name).mkdir(parents=True)
        shutil.copy(run / PROGRESS, directory / "lm" / run.name / PROGRESS)


def test_report_from_committed_files_imports_no_ray(tmp_path):
    _slice(tmp_path)
    code = ("import sys\n"
            "from iif_ray.reporting import stats\n"
            "stats.REPS = 200  # the same code path, fewer repetitions: a quick test\n"
            "from iif_ray.cli import main\n"
            f"assert main(['report', {str(tmp_path)!r}]) == 0\n"
            "ray = sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.'))\n"
            "print('ray modules:', ray)\n"
            "assert not ray\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ray modules: []" in proc.stdout
    text = (tmp_path / "report.md").read_text()
    assert "## frozenlake" in text  # evidence, from evals.csv
    assert "## detox-mini\n" in text  # in-training table of the LM rounds
    assert "## detox-mini: held-out evaluation" in text  # the LM runs' progress files
