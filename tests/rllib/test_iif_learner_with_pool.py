"""The pool inside real training: local and remote learners, Tune placement, several learners."""

from __future__ import annotations

import numpy as np
import pytest
import ray
import torch
from ray import tune

from iif_ray.diagnostics.learner import DiagnosticLearner
from iif_ray.ledger import read_ledger
from iif_ray.presets import get_preset
from iif_ray.rllib import IIFPPO, build_config

pytestmark = pytest.mark.ray


def config(num_scorers: int, ledger: str | None = None, **attribution):
    cfg = build_config(get_preset("cartpole"), algo="iif", seed=5,
                       attribution={"num_scorers": num_scorers, "num_cpus_per_scorer": 0.5,
                                    "ledger_dir": ledger, **attribution})
    return cfg.training(train_batch_size_per_learner=512, minibatch_size=64, num_epochs=2)


def iif_metrics(result: dict) -> dict:
    return result["learners"]["default_policy"]["iif"]


def scores_of(ledger: str, iteration: int) -> np.ndarray:
    table = read_ledger(ledger)
    it = table.column("iteration").to_numpy()
    return table.column("score").to_numpy()[it == iteration]


@pytest.mark.slow
def test_pool_in_training_matches_local_and_survives_a_killed_scorer(ray_local, tmp_path) -> None:
    local, pooled = str(tmp_path / "local"), str(tmp_path / "pool")
    algo = config(0, local).build_algo()
    for _ in range(2):
        algo.train()
    algo.stop()

    algo = config(2, pooled).build_algo()
    try:
        first = iif_metrics(algo.train())
        assert first["scorer_retries"] == 0
        # Kill one scorer between rounds: round 2 must replace it and re-score its shard.
        pool = algo.learner_group._learner.scorer
        ray.kill(pool.actors[0])
        second = iif_metrics(algo.train())
    finally:
        algo.stop()
    assert second["scorer_retries"] == 1 and pool.total_retries == 1
    for it in (1, 2):
        a, b = scores_of(local, it), scores_of(pooled, it)
        assert len(a) == len(b) > 0
        assert np.max(np.abs(a - b)) <= 1e-6 * np.max(np.abs(a))


@pytest.mark.slow
def test_remote_learner_with_scorer_pool(ray_local) -> None:
    cfg = config(1).learners(num_learners=1, num_cpus_per_learner=1)
    algo = cfg.build_algo()
    try:
        metrics = iif_metrics(algo.train())
        info = next(iter(algo.learner_group.foreach_learner(
            lambda learner: learner.scorer.actor_info))).get()
    finally:
        algo.stop()
    assert metrics["records_per_s"] > 0 and metrics["frac_dropped"] > 0
    assert len(info) == 1 and info[0]["pid"] > 0


@pytest.mark.slow
def test_several_learners_share_the_all_reduced_direction(ray_local) -> None:
    cfg = config(0).learners(num_learners=2, num_cpus_per_learner=0.5,
                             learner_class=DiagnosticLearner)
    algo = cfg.build_algo()
    try:
        algo.train()
        parts = [r.get() for r in algo.learner_group.foreach_learner(
            lambda learner: {k: (v if k == "n" else {p: t.cpu() for p, t in v.items()})
                             for k, v in learner.last_direction.items()})]
    finally:
        algo.stop()
    assert len(parts) == 2
    a, b = parts
    total = a["n"] + b["n"]
    for name in a["global"]:
        torch.testing.assert_close(a["global"][name], b["global"][name])
        expected = (a["local"][name] * a["n"] + b["local"][name] * b["n"]) / total
        torch.testing.assert_close(a["global"][name], expected, rtol=1e-5, atol=1e-7)
    assert any(not torch.allclose(a["local"][k], b["local"][k]) for k in a["local"])


@pytest.mark.parametrize("num_learners", [0, 1])
@pytest.mark.slow
def test_tune_trial_with_scorers_does_not_hang(ray_local, tmp_path, num_learners) -> None:
    """2-CPU cluster: the trial's placement group holds the scorer bundles IIFPPO reserves."""
    cfg = config(2 if num_learners == 0 else 1)
    if num_learners:
        cfg.learners(num_learners=1, num_cpus_per_learner=1).resources(
            num_cpus_for_main_process=0.5)
    bundles = IIFPPO.default_resource_request(cfg).bundles
    assert sum(b.get("CPU", 0) for b in bundles) <= 2
    assert bundles[-1] == {"CPU": 0.5}
    results = tune.Tuner(
        IIFPPO, param_space=cfg,
        run_config=tune.RunConfig(stop={"training_iteration": 2}, storage_path=str(tmp_path),
                                  name="pool", verbose=0),
    ).fit()
    assert not results.errors
    result = results[0]
    assert result.metrics["training_iteration"] == 2
    assert iif_metrics(result.metrics)["records_per_s"] > 0
