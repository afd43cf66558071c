"""Run directories under real commands: one owner at a time, and a full disk loses nothing.

Both tests run ``iif-ray train`` for real (subprocesses with their own Ray), so they are in
the slow tier.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from iif_ray.cli import main

ROOT = Path(__file__).resolve().parents[2]
TRAIN = [sys.executable, "-m", "iif_ray", "train", "--preset", "cartpole", "--algo", "iif",
         "--checkpoint-every", "1"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a private Ray
    return {**env, "PYTHONPATH": str(ROOT)}


def _rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


@pytest.mark.ray
@pytest.mark.slow
def test_a_second_run_on_the_same_out_is_refused_at_once(tmp_path, capsys):
    out = tmp_path / "run"
    first = subprocess.Popen([*TRAIN, "--timesteps", "6144", "--out", str(out)], env=_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "run.json").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert first.poll() is None, first.stderr.read()
        for extra in ([], ["--overwrite"]):
            t0 = time.monotonic()
            code = main(["train", "--preset", "cartpole", "--out", str(out), *extra])
            took = time.monotonic() - t0
            err = capsys.readouterr().err
            assert code == 2 and "is in use by iif-ray train (pid" in err, err
            assert took < 5, f"refused after {took:.1f} s"
        assert main(["train", "--resume", str(out)]) == 2
        assert "is in use by" in capsys.readouterr().err
    finally:
        _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-3000:]
    # The first run's data is whole: three rounds, one ledger file each, its summary.
    rows = _rows(out / "progress.csv")
    assert [r[0] for r in rows[1:]] == ["1", "2", "3"]
    assert sorted(p.name for p in (out / "ledger").glob("*.parquet")) == [
        f"iter-{k:06d}-learner0.parquet" for k in (1, 2, 3)]
    assert json.loads((out / "summary.json").read_text())["rounds"] == 3
    assert not (out / ".iif-ray.lock").exists()


_FILL = """
set -e
mount -t tmpfs -o size=64m tmpfs "$DISK"
"$@" --out "$DISK/run" 2>"$DISK/../stderr.txt" &
pid=$!
# Once two rounds are in, fill the disk: the run fails at its next write.
while [ "$(grep -c . "$DISK/run/progress.csv" 2>/dev/null || echo 0)" -lt 3 ]; do
    kill -0 $pid 2>/dev/null || break
    sleep 0.1
done
dd if=/dev/zero of="$DISK/filler" bs=64k 2>/dev/null || true
set +e
wait $pid
echo $? > "$DISK/../code.txt"
rm -f "$DISK/filler"
cp -a "$DISK/run" "$DISK/../run"
"""


@pytest.mark.ray
@pytest.mark.slow
def test_a_full_disk_keeps_the_last_whole_state(tmp_path):
    """On a small filesystem that fills mid-run: exit with one line naming the directory,
    every file whole (progress rows, ledger files, checkpoint), no temporary files, and the
    run resumes once there is space."""
    if shutil.which("unshare") is None or subprocess.run(
            ["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("mounting a small filesystem needs a private mount namespace "
                    "(unshare -m), which this machine does not permit")
    disk = tmp_path / "disk"
    disk.mkdir()
    proc = subprocess.run(
        ["unshare", "-m", "bash", "-c", _FILL, "fill", *TRAIN, "--timesteps", "12288"],
        env={**_env(), "DISK": str(disk)}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "run"
    code = int((tmp_path / "code.txt").read_text())
    err = (tmp_path / "stderr.txt").read_text().strip().splitlines()
    assert code == 1, err[-20:]
    assert err[-1].startswith("iif-ray train: error: no space left on the device of "
                              f"'{disk}/run'"), err[-5:]
    hidden = [str(p) for p in run.rglob(".*")]
    assert not hidden, f"no temporary files (nor the lock) are left: {hidden}"
    rows = _rows(run / "progress.csv")
    assert rows[0][0] == "round" and len(rows) >= 3
    assert all(len(r) == len(rows[0]) for r in rows), "every row whole"
    assert not (run / "summary.json").exists()
    import pyarrow.parquet as pq

    for f in (run / "ledger").glob("*.parquet"):
        pq.read_table(f)  # every ledger file whole
    # The copy taken out of the full disk resumes (the checkpoint is whole) and completes.
    resumed = subprocess.run([sys.executable, "-m", "iif_ray", "train", "--resume", str(run)],
                             env=_env(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((run / "summary.json").read_text())["rounds"] == 6
