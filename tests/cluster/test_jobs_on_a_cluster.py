"""A real two-node Ray cluster on this machine, driven only through the job API.

The head has no CPUs (as in the cluster configs), so Tune trials and scorer actors can only run
on the worker node; token authentication is on, as it is by default on a cluster. Every process
of this cluster carries a marker in its environment, and teardown kills exactly those, so the
test never touches another Ray on the machine.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from tests.processes import kill_marked

pytestmark = [pytest.mark.ray, pytest.mark.cluster]

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]


def _free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _node_ports(head: bool) -> list[str]:
    names = ["--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
             "--runtime-env-agent-port", "--metrics-export-port", "--node-manager-port",
             "--object-manager-port"]
    if head:
        names += ["--dashboard-port", "--ray-client-server-port"]
    args = []
    for name, port in zip(names, _free_ports(len(names)), strict=True):
        args += [name, str(port)]
    return args


class LocalCluster:
    """Head (0 CPUs, job API) plus one 2-CPU worker node, both started with ``ray start``."""

    def __init__(self) -> None:
        self.marker = f"IIF_RAY_TEST_CLUSTER={uuid.uuid4().hex}"
        self.temp_dir = tempfile.mkdtemp(prefix="iifray-")
        self.token = secrets.token_hex(32)
        gcs_port, = _free_ports(1)
        self.gcs = f"127.0.0.1:{gcs_port}"
        key, value = self.marker.split("=")
        self.env = {**os.environ, key: value, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
                    "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token,
                    "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
        for inherited in ("RAY_ADDRESS", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"):
            self.env.pop(inherited, None)
        self.dashboard = ""
        self.head_node_id = self.worker_node_id = ""

    def start(self) -> None:
        gcs_port = int(self.gcs.rsplit(":", 1)[1])
        head_ports = _node_ports(head=True)
        self.dashboard = f"http://127.0.0.1:{head_ports[head_ports.index('--dashboard-port') + 1]}"
        common = ["--disable-usage-stats", "--object-store-memory", str(200 * 1024**2)]
        # One temp dir per node, as on separate machines: nodes sharing one would share (and
        # garbage-collect) each other's unpacked job working directories.
        self._ray_start(["--head", "--port", str(gcs_port), "--num-cpus", "0",
                         "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
                         "--temp-dir", f"{self.temp_dir}/head", *head_ports, *common])
        self._ray_start(["--address", self.gcs, "--num-cpus", "2", *_node_ports(head=False),
                         "--temp-dir", f"{self.temp_dir}/worker", *common])
        self.head_node_id, self.worker_node_id = self._wait_for_nodes(2)

    def _ray_start(self, args: list[str]) -> None:
        subprocess.run([str(BIN / "ray"), "start", *args], env=self.env, check=True,
                       capture_output=True, text=True, timeout=180)

    def state(self, kind: str, *args: str) -> list[dict]:
        """``ray list <kind>`` as JSON, run in a child: Ray reads the auth mode at import, so
        this process (which imported Ray without a token) cannot switch to token mode."""
        res = self.cli(str(BIN / "ray"), "list", kind, "--address", self.dashboard,
                       "--format", "json", "--limit", "10000", *args, timeout=120)
        if res.returncode != 0:
            raise RuntimeError(res.stderr[-2000:])
        return json.loads(res.stdout)

    def _wait_for_nodes(self, n: int, timeout_s: float = 120.0) -> tuple[str, str]:
        deadline = time.time() + timeout_s
        while True:
            try:
                nodes = [nd for nd in self.state("nodes") if nd["state"] == "ALIVE"]
            except RuntimeError:
                nodes = []
            if len(nodes) >= n:
                head = next(nd["node_id"] for nd in nodes if nd["is_head_node"])
                worker = next(nd["node_id"] for nd in nodes if not nd["is_head_node"])
                return head, worker
            if time.time() > deadline:
                raise TimeoutError(f"only {len(nodes)} of {n} nodes came up")
            time.sleep(1.0)

    def actor_nodes(self, class_name: str) -> list[str]:
        """Nodes of the actors (alive or finished) whose class name contains ``class_name``."""
        return [a["node_id"] for a in self.state("actors", "--detail")
                if class_name in a["class_name"]]

    def cli(self, *args: str, token: bool = True, auth_mode: bool = True,
            timeout: float = 900) -> subprocess.CompletedProcess:
        env = dict(self.env)
        if not token:
            env.pop("RAY_AUTH_TOKEN")
        if not auth_mode:  # the client must find token mode from the token alone
            env.pop("RAY_AUTH_MODE")
        return subprocess.run(list(args), env=env, capture_output=True, text=True,
                              timeout=timeout, cwd=REPO)

    def teardown(self) -> None:
        kill_marked(self.marker)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster():
    c = LocalCluster()
    try:
        c.start()
        yield c
    finally:  # also after a failed start: nothing of this cluster outlives the module
        c.teardown()


def test_submit_without_token_is_rejected_with_a_hint(cluster, tmp_path):
    res = cluster.cli(str(BIN / "iif-ray"), "submit", "--address", cluster.dashboard, "--",
                      "iif-ray", "train", "--preset", "cartpole", "--out", str(tmp_path / "x"),
                      token=False, timeout=120)
    assert res.returncode != 0
    assert "RAY_AUTH_TOKEN" in res.stderr + res.stdout
    assert not (tmp_path / "x" / "summary.json").exists()


def test_train_job_runs_scorers_on_the_worker_node(cluster, tmp_path):
    out = tmp_path / "train"
    res = cluster.cli(str(BIN / "iif-ray"), "submit", "--address", cluster.dashboard, "--",
                      "iif-ray", "train", "--preset", "cartpole", "--timesteps", "2048",
                      "--num-scorers", "1", "--out", str(out), auth_mode=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "results of job" in res.stdout and str(out) in res.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["env_steps"] >= 2048 and summary["mean_frac_dropped"] > 0
    placement = summary["resources"]
    # The driver (and its local learner) runs on the head; the scorer needs a CPU, which only
    # the worker node has.
    assert placement["driver_node_id"] == cluster.head_node_id
    scorers = [s for lr in placement["learners"] for s in lr["scorers"]]
    assert len(scorers) == 1 and scorers[0]["node_id"] == cluster.worker_node_id
    assert cluster.actor_nodes("ScorerWorker") == [cluster.worker_node_id]
    assert (out / "checkpoint").is_dir() and any((out / "ledger").iterdir())


def test_tune_sweep_job_via_plain_ray_job_submit(cluster, tmp_path):
    out = tmp_path / "sweep"
    res = cluster.cli(str(BIN / "ray"), "job", "submit", "--address", cluster.dashboard,
                      "--working-dir", str(REPO), "--", "python", "-m", "iif_ray", "sweep",
                      "benchmark", "--envs", "cartpole", "--algos", "ppo,iif", "--seeds", "1",
                      "--budget-scale", "0.02", "--eval-episodes", "2", "--max-concurrent", "2",
                      "--out", str(out))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    import csv

    rows = list(csv.DictReader((out / "rounds.csv").open()))
    assert rows, res.stdout[-5000:]
    assert {r["algo"] for r in rows} == {"ppo", "iif"}
    assert all(float(r["env_steps"]) >= 2048 for r in rows)
    assert len(list((out / "tune").rglob("result.json"))) == 2
    # Both trial actors ran on the worker node: the head has no CPUs for them.
    trials = cluster.actor_nodes("IIFPPO")
    assert len(trials) == 2 and set(trials) == {cluster.worker_node_id}
