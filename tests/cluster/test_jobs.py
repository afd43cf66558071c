"""``iif-ray submit``'s command handling, without a cluster (the cluster test submits for real)."""

from __future__ import annotations

import pytest

from iif_ray.cli import build_parser
from iif_ray.cluster.jobs import RESULTS_ROOT, SubmitError, parse_job_command, runtime_env

PARSER = build_parser()


def test_relative_out_is_anchored_and_absolute_out_kept(tmp_path):
    job = parse_job_command(["iif-ray", "train", "--preset", "cartpole", "--out", "runs/cp"],
                            PARSER)
    assert job.argv[-2:] == ["--out", f"{RESULTS_ROOT}/runs/cp"]
    assert job.entrypoint.startswith("python -m iif_ray train")
    assert f'"{RESULTS_ROOT}/runs/cp"' in job.entrypoint  # $HOME expands on the cluster
    assert job.notes and "runs/cp" in job.notes[0]

    job = parse_job_command(["train", "--preset", "cartpole", f"--out={tmp_path}"], PARSER)
    assert job.argv[-1] == f"--out={tmp_path}" and job.out == str(tmp_path) and not job.notes


def test_lm_run_directories_are_anchored_too():
    job = parse_job_command(["iif-ray", "train-lm", "--out=runs/lm", "--rounds", "2"], PARSER)
    assert job.argv == ["train-lm", f"--out={RESULTS_ROOT}/runs/lm", "--rounds", "2"]
    assert f'"--out={RESULTS_ROOT}/runs/lm"' in job.entrypoint  # $HOME still expands
    # Resuming names the run to continue: the same anchored directory the first job wrote.
    job = parse_job_command(["iif-ray", "train-lm", "--resume", "runs/lm"], PARSER)
    assert job.argv == ["train-lm", "--resume", f"{RESULTS_ROOT}/runs/lm"]
    assert job.out == f"{RESULTS_ROOT}/runs/lm"


def test_default_out_is_named_explicitly():
    job = parse_job_command(["iif-ray", "sweep", "benchmark", "--envs", "acrobot"], PARSER)
    assert job.argv[-2:] == ["--out", f"{RESULTS_ROOT}/runs/sweep"]
    job = parse_job_command(["iif-ray", "bench", "scoring"], PARSER)
    assert job.out is None and job.argv == ["bench", "scoring"]


def test_arguments_with_spaces_are_quoted():
    job = parse_job_command(["iif-ray", "train", "--preset", "cartpole", "--target-option",
                             "probe_file=my probes.npz", "--out", "/abs/dir"], PARSER)
    assert "'probe_file=my probes.npz'" in job.entrypoint


@pytest.mark.parametrize("argv, needle", [
    ([], "no command"),
    (["iif-ray", "submit", "--", "iif-ray", "train"], "cannot submit itself"),
    (["iif-ray", "trian", "--out", "x"], "does not parse"),
    (["iif-ray", "train", "--preset", "cartpole", "--drop-fraction", "1.5", "--out", "x"],
     "does not parse"),
])
def test_bad_job_commands_fail_before_submission(argv, needle):
    with pytest.raises(SubmitError, match=needle):
        parse_job_command(argv, PARSER)


def test_runtime_env_ships_the_checkout_without_outputs():
    env = runtime_env({"A": "1"})
    assert env["env_vars"] == {"A": "1"}
    assert {".venv/", "runs/", "results/"} <= set(env["excludes"])
    assert (__import__("pathlib").Path(env["working_dir"]) / "tune_experiments").is_dir()
