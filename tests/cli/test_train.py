"""The ``iif-ray`` command line: clear errors before Ray starts, complete run directories."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from iif_ray.cli import main
from iif_ray.driver import RunSpec, run
from iif_ray.ledger import read_ledger
from iif_ray.presets import get_preset
from tests.processes import kill_hard, start_marked


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--env", "NoSuchEnv-v0"], "unknown environment 'NoSuchEnv-v0'"),
        (["--env", "LunarLander-v2"], "did you mean LunarLander-v3"),
        (["--preset", "pong"], "unknown preset 'pong'; available:"),
        (["--preset", "acrobot", "--drop-fraction", "1.0"],
         "drop-fraction must be a number in [0, 1), got '1.0'"),
        (["--preset", "acrobot", "--drop-fraction", "-0.1"], "got '-0.1'"),
        (["--preset", "acrobot", "--timesteps", "-100"], "timesteps must be >= 1, got '-100'"),
        (["--preset", "acrobot", "--target", "reward"], "unknown target 'reward'"),
        (["--preset", "acrobot", "--target", "action"], "action target needs probe states"),
        (["--preset", "acrobot", "--num-scorers", "-2"],
         "num-scorers must be an integer >= 0, got '-2'"),
    ],
)
def test_bad_input_exits_nonzero_with_one_clear_message(tmp_path, capsys, args, message) -> None:
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        code = main(["train", *args, "--out", str(out)])
        raise SystemExit(code)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert any(message in line for line in err), err
    assert not out.exists(), "nothing may be written for rejected input"


def test_non_empty_out_dir_is_refused(tmp_path, capsys) -> None:
    (tmp_path / "old.txt").write_text("previous run")
    assert main(["train", "--preset", "cartpole", "--out", str(tmp_path)]) == 2
    assert "is not empty and holds no iif-ray run" in capsys.readouterr().err
    assert (tmp_path / "old.txt").exists()


@pytest.mark.ray
@pytest.mark.slow
def test_train_writes_a_complete_run_directory(tmp_path) -> None:
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "iif_ray.cli", "train", "--preset", "cartpole", "--algo", "iif",
         "--timesteps", "4096", "--seed", "1", "--drop-fraction", "0.25", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "round" in proc.stdout and "final return" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["env_steps"] >= 4096 and summary["rounds"] == 2
    assert summary["attribution"]["drop_fraction"] == 0.25 and summary["seed"] == 1
    assert summary["final_return"] is not None and summary["wall_s"] > 0
    assert len(summary["rounds_detail"]) == 2
    assert (out / "checkpoint" / "rllib_checkpoint.json").exists()
    ledger = read_ledger(str(out / "ledger"))
    assert set(ledger.column("iteration").to_pylist()) == {1, 2}
    assert ledger.num_rows == summary["env_steps"]
    progress = (out / "progress.csv").read_text().splitlines()
    assert len(progress) == 3


@pytest.mark.ray
@pytest.mark.slow
def test_failed_run_leaves_nothing_that_looks_complete(ray_local, tmp_path) -> None:
    def fail_on_second_round(row: dict) -> None:
        if row["round"] == 2:
            raise RuntimeError("simulated crash")

    spec = RunSpec(preset=get_preset("cartpole"), algo="ppo", timesteps=10_000,
                   out_dir=str(tmp_path))
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(spec, fail_on_second_round)
    assert not (tmp_path / "summary.json").exists()
    assert not (tmp_path / "checkpoint").exists()
    # What was measured is kept: two rounds of progress and ledgers.
    assert len((tmp_path / "progress.csv").read_text().splitlines()) == 3
    assert len(list((tmp_path / "ledger").glob("iter-*.parquet"))) == 2


@pytest.mark.parametrize(("address", "message"), [
    ("127.0.0.1:1", "cannot reach Ray at '127.0.0.1:1' within 3 s"),
    ("nohost", "Ray address 'nohost' is not host:port"),
    ("10.0.0.1:99999", "is not host:port"),
])
@pytest.mark.slow
def test_a_bad_address_fails_within_the_bound(tmp_path, address, message) -> None:
    """Ray itself would retry an unreachable GCS address for ever (more than 10 minutes)."""
    out = tmp_path / "run"
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "iif_ray", "train", "--preset", "cartpole", "--address", address,
         "--out", str(out)],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "IIF_RAY_CONNECT_TIMEOUT_S": "3"},
    )
    assert time.monotonic() - t0 < 60
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in proc.stderr
    assert not out.exists()


def _file_bytes(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.ray
@pytest.mark.slow
def test_a_killed_run_resumes_into_the_same_directory(tmp_path) -> None:
    """Kill ``iif-ray train`` after its round-2 checkpoint and at least one more round;
    ``diagnose`` reads the interrupted run; ``--resume`` ends it with exactly one progress row
    and one ledger file per round, rounds up to the checkpoint untouched."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "iif_ray", "train", "--preset", "cartpole", "--timesteps",
           "10240", "--checkpoint-every", "2", "--out", str(out)]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a private Ray
    first, marker = start_marked(cmd, env)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and first.poll() is None:
            rows = (out / "progress.csv").read_text().splitlines()[1:] \
                if (out / "progress.csv").exists() else []
            if len(rows) >= 3 and (out / "checkpoint").is_dir():
                break
            time.sleep(0.2)
        assert first.poll() is None, "the run ended before it could be interrupted"
    finally:
        kill_hard(first, marker)
    assert not (out / "summary.json").exists()
    before = (out / "progress.csv").read_text().splitlines()
    assert len(before) - 1 >= 3

    assert main(["diagnose", str(out)]) == 0  # the interrupted run's ledger is readable
    assert (out / "diagnostics" / "index.md").exists()

    # A copy resumed elsewhere continues there and never touches the original.
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(out, copy)
    original = _file_bytes(out)
    proc = subprocess.run([sys.executable, "-m", "iif_ray", "train", "--resume", str(copy)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _file_bytes(out) == original
    assert (copy / "summary.json").exists() and not (copy / ".iif-ray.lock").exists()

    proc = subprocess.run([sys.executable, "-m", "iif_ray", "train", "--resume", "--out",
                           str(out)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    progress = (out / "progress.csv").read_text().splitlines()
    assert [int(line.split(",")[0]) for line in progress[1:]] == [1, 2, 3, 4, 5]
    assert progress[:3] == before[:3], "rounds up to the checkpoint are kept as they were"
    assert sorted(p.name for p in (out / "ledger").glob("*.parquet")) == [
        f"iter-{k:06d}-learner0.parquet" for k in range(1, 6)]
    ledger = read_ledger(str(out / "ledger")).to_pandas()
    assert sorted(ledger.groupby("iteration").size().index) == [1, 2, 3, 4, 5]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed"] and summary["rounds"] == 5 and summary["env_steps"] == 10240

    assert main(["train", "--resume", "--preset", "acrobot", "--out", str(out)]) == 2
