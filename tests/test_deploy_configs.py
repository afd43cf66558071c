"""Cluster configs, manifests and images: checked offline, against Ray's own schema and our pins."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parent.parent
LAUNCHER_CONFIGS = sorted((REPO / "cluster").glob("*.yaml"))
MANIFESTS = sorted((REPO / "cluster" / "kuberay").glob("*.yaml"))


def _dockerfile_args() -> dict[str, str]:
    text = (REPO / "docker" / "Dockerfile").read_text()
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", text, flags=re.M))


def _pyproject_requirement(name: str) -> Requirement:
    import tomllib

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(r for r in map(Requirement, deps) if r.name == name)


def _pinned_images() -> set[str]:
    import tomllib

    args = _dockerfile_args()
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    tag = f"{version}-ray{args['RAY_VERSION']}-torch{args['TORCH_VERSION']}"
    return {f"ghcr.io/iif-ray/iif-ray:{tag}-{flavour}" for flavour in ("cpu", "cuda")}


def test_image_pins_agree_with_the_project():
    args = _dockerfile_args()
    ray_req = _pyproject_requirement("ray")
    assert ray_req.specifier.contains(args["RAY_VERSION"]), (args["RAY_VERSION"], ray_req)
    assert {"rllib", "tune", "default"} <= ray_req.extras
    makefile = (REPO / "Makefile").read_text()
    torch_pin = re.search(r"^TORCH_VERSION \?= (\S+)$", makefile, flags=re.M).group(1)
    assert args["TORCH_VERSION"] == torch_pin
    assert _pyproject_requirement("torch").specifier.contains(torch_pin)
    # The versions the test suite itself runs on are the pinned ones.
    import ray
    import torch

    assert ray.__version__ == args["RAY_VERSION"]
    assert torch.__version__.split("+")[0] == torch_pin


@pytest.mark.parametrize("path", LAUNCHER_CONFIGS, ids=lambda p: p.name)
def test_launcher_config_passes_ray_validation(path):
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(yaml.safe_load(path.read_text()))
    validate_config(config)  # Ray's ray-schema.json plus its own consistency checks
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"] == {"CPU": 0}
    workers = {k: v for k, v in types.items() if k != config["head_node_type"]}
    assert all(v["min_workers"] == 0 and v["max_workers"] > 0 for v in workers.values())
    assert any("gpu" in k for k in workers)
    images = {config["docker"]["head_image"], config["docker"]["worker_image"]}
    images |= {v["docker"]["worker_image"] for v in workers.values() if "docker" in v}
    assert images == _pinned_images()
    starts = " ".join(config["head_start_ray_commands"] + config["worker_start_ray_commands"])
    assert starts.count("RAY_AUTH_MODE=token") == 2
    assert "--dashboard-host=127.0.0.1" in starts and "0.0.0.0" not in starts
    assert "~/.ray/auth_token" in config["file_mounts"]


def test_ray_validation_rejects_a_broken_launcher_config():
    """The check above can fail: an unknown key in a node type is refused by Ray's schema."""
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(yaml.safe_load(LAUNCHER_CONFIGS[0].read_text()))
    config["available_node_types"]["head"]["instance_typo"] = "m6i.large"
    with pytest.raises(jsonschema.ValidationError):
        validate_config(config)


def _containers(doc: dict) -> list[dict]:
    spec = doc["spec"]
    cluster = spec.get("rayClusterSpec", spec)
    pods = [cluster["headGroupSpec"]["template"]]
    pods += [g["template"] for g in cluster["workerGroupSpecs"]]
    if "submitterPodTemplate" in spec:
        pods.append(spec["submitterPodTemplate"])
    return [c for pod in pods for c in pod["spec"]["containers"]]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_kuberay_manifest(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert len(docs) == 1
    doc = docs[0]
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] in ("RayCluster", "RayJob")
    cluster = doc["spec"].get("rayClusterSpec", doc["spec"])
    assert cluster["rayVersion"] == _dockerfile_args()["RAY_VERSION"]
    head = cluster["headGroupSpec"]
    assert head["serviceType"] == "ClusterIP"
    assert head["rayStartParams"]["num-cpus"] == "0"
    for group in cluster["workerGroupSpecs"]:
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    containers = _containers(doc)
    assert {c["image"] for c in containers} <= _pinned_images()
    for c in containers:
        env = {e["name"]: e for e in c["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "iif-ray-auth"
    gpu_groups = [g for g in cluster["workerGroupSpecs"] if g["groupName"] == "gpu"]
    for g in gpu_groups:
        limits = g["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == "1"
        assert g["template"]["spec"]["containers"][0]["image"].endswith("-cuda")
    if doc["kind"] == "RayJob":
        assert doc["spec"]["entrypoint"].startswith("python -m iif_ray ")
        from iif_ray.cli import build_parser
        from iif_ray.cluster.jobs import parse_job_command

        # a valid iif-ray command
        parse_job_command(doc["spec"]["entrypoint"].split()[3:], build_parser())
