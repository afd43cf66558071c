"""The GPU path: scoring and the PPO update on CUDA give the CPU's results.

Runs where a CUDA device exists (e.g. `make test` on a GPU node); elsewhere the module is
skipped as a whole, since there is nothing to place on a GPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = [
    pytest.mark.ray,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_scores_on_gpu_equal_cpu_scores():
    from test_pool import workload

    from iif_ray.attribution import score_records

    policy, records, direction = workload(3000)
    cpu = score_records(policy, records, direction, entropy_coeff=0.01).numpy()
    policy.net.to("cuda")
    gpu_dir = {k: v.cuda() for k, v in direction.items()}
    gpu = score_records(policy, records.to("cuda"), gpu_dir, entropy_coeff=0.01).cpu().numpy()
    assert np.max(np.abs(gpu - cpu)) / np.max(np.abs(cpu)) < 1e-4


@pytest.fixture(scope="module")
def ray_gpu():
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=4, num_gpus=1, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_gpu_learner_and_gpu_scorers_train_a_round(ray_gpu, tmp_path):
    from iif_ray.driver import RunSpec, run
    from iif_ray.presets import get_preset

    spec = RunSpec(preset=get_preset("cartpole"), algo="iif", timesteps=4096,
                   out_dir=str(tmp_path), num_gpus_per_learner=1,
                   attribution={"num_scorers": 2, "num_gpus_per_scorer": 0.25})
    summary = run(spec)
    assert summary["env_steps"] >= 4096 and summary["mean_frac_dropped"] > 0
    learner = summary["resources"]["learners"][0]
    assert learner["device"].startswith("cuda")
    assert [s["device"] for s in learner["scorers"]] == ["cuda", "cuda"]
