"""Snapshots and ``iif-ray evaluate``: a real evidence sweep saves every round's policy, and
evaluation turns them into ``evals.csv`` (exact where the MDP is finite), resumably."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from iif_ray.envs import make_env
from iif_ray.evaluation import PolicySampler, expected_return, finite_mdp
from iif_ray.experiments.evaluate import EvalProtocol, _adaptive_mc, protocol_for
from iif_ray.experiments.snapshots import find_runs, read_snapshot, read_spec, round_file


@pytest.mark.ray
@pytest.mark.slow
def test_evidence_sweep_snapshots_then_exact_evaluation(ray_local, tmp_path, monkeypatch):
    from iif_ray.cli import main
    from iif_ray.rllib.module_bridge import policy_from_spec

    monkeypatch.delenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", raising=False)
    out = tmp_path / "ev"
    assert main(["sweep", "evidence", "--envs", "frozenlake", "--algos", "ppo,iif", "--seeds",
                 "1", "--budget-scale", "0.04", "--out", str(out)]) == 0
    rounds = pd.read_csv(out / "rounds.csv")
    assert (rounds.eval_episodes == 0).all() and rounds.eval_return.isna().all()  # no in-trial
    assert (rounds.eval_s == 0).all()
    runs = {r.algo: r for r in find_runs(out / "policies")}
    assert sorted(runs) == ["iif", "ppo"]
    assert runs["ppo"].rounds() == [0, 1, 2]
    assert runs["ppo"].final_round() == 2  # the sweep's plan names the round it stopped at
    # Same seed, same initial policy; after training they differ.
    first = [read_snapshot(round_file(runs[a].path, 0)) for a in ("ppo", "iif")]
    last = [read_snapshot(round_file(runs[a].path, 2)) for a in ("ppo", "iif")]
    assert all(torch.equal(first[0][k], first[1][k]) for k in first[0])
    assert any(not torch.equal(last[0][k], last[1][k]) for k in last[0])

    assert main(["evaluate", str(out)]) == 0
    evals = pd.read_csv(out / "evals.csv")
    assert len(evals) == 6 and (evals.eval_method == "exact").all() and (evals.eval_se == 0).all()
    # The value equals the DP on the snapshot as rebuilt here (spec + weights).
    policy = policy_from_spec(read_spec(runs["iif"].path))
    policy.net.load_state_dict(read_snapshot(round_file(runs["iif"].path, 2)))
    mdp = finite_mdp("FrozenLake-v1", {"map_name": "4x4", "is_slippery": False})
    want = expected_return(mdp, PolicySampler(policy).probabilities)
    got = evals.query("algo == 'iif' and round == 2").eval_return.item()
    assert got == pytest.approx(want, rel=1e-6)

    # Resume: a second run finds nothing to do and leaves the file as it was.
    before = (out / "evals.csv").read_bytes()
    assert main(["evaluate", str(out)]) == 0
    assert (out / "evals.csv").read_bytes() == before
    # A lost row is recomputed, and only it.
    evals.iloc[1:].to_csv(out / "evals.csv", index=False)
    assert main(["evaluate", str(out)]) == 0
    again = pd.read_csv(out / "evals.csv")
    assert len(again) == 6 and np.allclose(again.eval_return, evals.eval_return)
    # A snapshot trained again (a trial resumed from an earlier checkpoint) is re-evaluated.
    from iif_ray.experiments.snapshots import write_snapshot

    changed = {k: v * 0.5 for k, v in last[1].items()}
    write_snapshot(runs["iif"].path, 2, changed)
    assert main(["evaluate", str(out)]) == 0
    final = pd.read_csv(out / "evals.csv")
    assert len(final) == 6
    moved = final.eval_return.to_numpy() != again.eval_return.to_numpy()
    assert moved.sum() == 1
    assert (final[moved].algo.item(), final[moved]["round"].item()) == ("iif", 2)


def test_adaptive_monte_carlo_stops_at_the_target_or_the_cap():
    from iif_ray.attribution import FunctionalPolicy, make_distribution

    torch.manual_seed(0)
    env = lambda: make_env("CartPole-v1")  # noqa: E731
    net = torch.nn.Linear(4, 2)
    sampler = PolicySampler(FunctionalPolicy(net, make_distribution("categorical")))
    loose = _adaptive_mc(env, sampler, EvalProtocol("paired-mc", min_episodes=20, block=20,
                                                    max_episodes=200, target_se=100.0))
    assert loose[2] == 20 and loose[1] <= 100.0
    capped = _adaptive_mc(env, sampler, EvalProtocol("paired-mc", min_episodes=20, block=20,
                                                     max_episodes=60, target_se=1e-6))
    assert capped[2] == 60 and capped[1] > 1e-6
    stepped = _adaptive_mc(env, sampler, EvalProtocol("paired-mc", min_episodes=20, block=20,
                                                      max_episodes=400, target_se=3.0))
    assert stepped[1] <= 3.0 and stepped[2] % 20 == 0 and stepped[2] > 20


def test_protocols_per_environment():
    assert protocol_for("frozenlake").method == "exact"
    assert protocol_for("minigrid").method == "exact"
    acro, lunar = protocol_for("acrobot"), protocol_for("lunarlander")
    assert acro.method == lunar.method == "paired-mc"
    assert acro.target_se == pytest.approx(10.0) and lunar.target_se == pytest.approx(8.0)
    assert lunar.rounds(range(0, 151)) == list(range(0, 151, 5))
    every5 = EvalProtocol("exact", every=5)
    assert every5.rounds([0, 1, 2, 3, 4, 5, 6, 7], final=7) == [0, 5, 7]
    # A run still training (its plan says 12): its newest round 7 is off the grid, not "last".
    assert every5.rounds([0, 1, 2, 3, 4, 5, 6, 7], final=12) == [0, 5]
    assert every5.rounds([0, 1, 2, 3, 4, 5, 6, 7]) == [0, 5]  # no plan: the grid only


def test_a_nan_evaluation_is_pending_again(tmp_path):
    """A stored NaN return is an evaluation that produced none: ``pending_work`` lists that
    point again (and only it), so it is not 'already evaluated' for ever."""
    from iif_ray.experiments.evaluate import EvaluateOptions, pending_work
    from iif_ray.experiments.snapshots import SPEC_FILE, snapshot_digest
    from iif_ray.reporting.rounds import EVAL_COLUMNS

    run = tmp_path / "policies" / "frozenlake" / "ppo" / "seed0"
    run.mkdir(parents=True)
    (run / SPEC_FILE).write_bytes(b"spec")
    for k in range(3):
        round_file(run, k).write_bytes(f"weights {k}".encode())
    rows = [("frozenlake", "ppo", 0, k, value, 0.0, 0, "exact", 0.1,
             snapshot_digest(round_file(run, k)))
            for k, value in ((0, 0.5), (1, float("nan")), (2, 0.7))]
    pd.DataFrame(rows, columns=list(EVAL_COLUMNS)).to_csv(tmp_path / "evals.csv", index=False)
    [(found, todo, _)] = pending_work(EvaluateOptions(out=str(tmp_path), every=1))
    assert (found.env, found.algo, found.seed) == ("frozenlake", "ppo", 0)
    assert todo == [1]
