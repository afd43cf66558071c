"""Every bad input is refused before Ray starts: exit status 2, one line that names the value
(and, where there is one, the accepted range), no traceback, and nothing written.

``{tmp}`` in an argument is the test's scratch directory, which is also the working
directory (so a command's default output directory would show up as a leftover too).
"""

from __future__ import annotations

import pytest

from iif_ray.cli import main

CP = ["--preset", "cartpole"]
OUT = ["--out", "{tmp}/run"]

CASES: list[tuple[list[str], str]] = [
    # train: environments and presets
    (["train", "--env", "NoSuchEnv-v0", *OUT], "unknown environment 'NoSuchEnv-v0'"),
    (["train", "--env", "LunarLander-v2", *OUT], "did you mean LunarLander-v3"),
    (["train", "--preset", "pong", *OUT], "unknown preset 'pong'; available:"),
    (["train", "--preset", "frozenlake", "--env", "CartPole-v1", *OUT],
     "--preset frozenlake is the recipe for FrozenLake-v1"),
    (["train", *OUT], "give --env or --preset"),
    (["train", *CP], "give --out DIR for a new run or --resume DIR to continue one"),
    (["train", *CP, "--bogus", *OUT], "unrecognized arguments: --bogus"),
    (["train", *CP, "--algo", "sac", *OUT], "invalid choice: 'sac'"),
    (["train", *CP, "--seed", "-1", *OUT], "seed must be >= 0, got '-1'"),
    # budgets
    (["train", *CP, "--timesteps", "-100", *OUT], "timesteps must be >= 1, got '-100'"),
    (["train", *CP, "--timesteps", "abc", *OUT], "timesteps must be an integer, got 'abc'"),
    (["train", *CP, "--timesteps", "100", *OUT], "--timesteps 100 is less than one round"),
    # selection and drop fraction
    (["train", *CP, "--drop-fraction", "1.0", *OUT], "must be a number in [0, 1), got '1.0'"),
    (["train", *CP, "--drop-fraction", "-0.1", *OUT], "must be a number in [0, 1), got '-0.1'"),
    (["train", *CP, "--drop-fraction", "abc", *OUT], "must be a number in [0, 1), got 'abc'"),
    (["train", *CP, "--selection", "worst", *OUT], "invalid choice: 'worst'"),
    (["train", *CP, "--mode", "maybe", *OUT], "invalid choice: 'maybe'"),
    # targets
    (["train", *CP, "--target", "reward", *OUT], "unknown target 'reward'"),
    (["train", *CP, "--target", "action", *OUT], "action target needs probe states"),
    (["train", *CP, "--target", "action", "--target-option", "action=9", *OUT],
     "action=9 is not an action of CartPole-v1; accepted: integers 0..1"),
    (["train", *CP, "--target", "action", "--target-option", "action=-1", *OUT],
     "action=-1 is not an action of CartPole-v1"),
    (["train", *CP, "--target", "action", "--target-option", "action=left", *OUT],
     "action='left' is not an action of CartPole-v1"),
    (["train", *CP, "--target", "action", "--target-option", "probe_file={tmp}/no.npz", *OUT],
     "probe file '{tmp}/no.npz' does not exist"),
    (["train", *CP, "--target-option", "action", *OUT], "expected KEY=VALUE, got 'action'"),
    # resources (an embedded Ray gets this machine's CPUs and GPUs)
    (["train", *CP, "--num-scorers", "-2", *OUT], "num-scorers must be an integer >= 0, got '-2'"),
    (["train", *CP, "--num-scorers", "64", *OUT], "need 64 CPUs; the embedded Ray has"),
    (["train", *CP, "--num-env-runners", "64", *OUT], "--num-env-runners 64"),
    (["train", *CP, "--num-learners", "64", *OUT], "--num-learners 64"),
    (["train", *CP, "--num-gpus-per-learner", "64", *OUT], "need 64 GPU(s)"),
    (["train", *CP, "--num-gpus-per-learner", "-1", *OUT], "must be a number >= 0, got '-1'"),
    (["train", *CP, "--num-scorers", "1", "--num-gpus-per-scorer", "64", *OUT],
     "--num-gpus-per-scorer 64.0"),
    (["train", *CP, "--num-gpus-per-scorer", "nan", *OUT], "must be a number >= 0, got 'nan'"),
    # the run directory
    (["train", *CP, "--out", "{tmp}/file.txt"], "cannot be a run directory"),
    (["train", *CP, "--out", "{tmp}/full"], "is not empty; pass --overwrite"),
    # cluster addresses
    (["train", *CP, "--address", "127.0.0.1:1", *OUT], "cannot reach Ray at '127.0.0.1:1'"),
    (["train", *CP, "--address", "nohost", *OUT], "Ray address 'nohost' is not host:port"),
    # demo
    (["demo", "--seeds", "0"], "seeds must be an integer >= 1, got '0'"),
    (["demo", "--preset", "pong"], "invalid choice: 'pong'"),
    (["demo", "--rounds", "0"], "rounds must be an integer >= 1, got '0'"),
    (["demo", "--rounds", "100000"], "rounds 100000 is more than 10x the preset's"),
    # sweep
    (["sweep", "nope"], "sweep 'nope' not found"),
    (["sweep", "benchmark", "--envs", "pong"], "unknown preset 'pong'"),
    (["sweep", "benchmark", "--algos", "sac"], "unknown algo 'sac'"),
    (["sweep", "benchmark", "--budget-scale", "20"],
     "budget-scale must be a number in (0, 10], got '20'"),
    (["sweep", "benchmark", "--seeds", "0"], "seeds must be an integer >= 1, got '0'"),
    (["sweep", "benchmark", "--checkpoint-every", "0"], "checkpoint-every must be an integer >= 1"),
    # train-lm
    (["train-lm", "--out", "{tmp}/run", "--model", "{tmp}/nowhere"],
     "--model '{tmp}/nowhere' is not a local model directory"),
    (["train-lm", "--out", "{tmp}/run", "--reward", "{tmp}/nowhere"],
     "--reward '{tmp}/nowhere' is not a local model directory"),
    (["train-lm", "--out", "{tmp}/run", "--estimator", "grpo", "--group-size", "1"],
     "estimator grpo needs group_size >= 2"),
    (["train-lm", "--out", "{tmp}/run", "--minibatch-size", "999"],
     "minibatch_size 999 is larger than a round's 256 sequences"),
    (["train-lm", "--out", "{tmp}/run", "--rounds", "0"],
     "rounds must be an integer >= 1, got '0'"),
    (["train-lm", "--out", "{tmp}/run", "--drop-fraction", "1.5"],
     "drop-fraction must be a number in [0, 1), got '1.5'"),
    (["train-lm", "--out", "{tmp}/run", "--algo", "dpo"], "invalid choice: 'dpo'"),
    (["train-lm"], "give --out DIR for a new run or --resume DIR"),
    (["train-lm", "--resume", "{tmp}"], "holds no LM run (no run.json)"),
    # resume: a flag that would change what the run trains names the stored value
    (["train", "--resume", "{tmp}/cprun", "--seed", "3"],
     "--seed 3 conflicts with the run's stored value 0"),
    (["train", "--resume", "{tmp}/cprun", "--algo", "ppo"],
     "--algo ppo conflicts with the run's stored value 'iif'"),
    (["train", "--resume", "{tmp}/cprun", "--drop-fraction", "0.3"],
     "--drop-fraction 0.3 conflicts with the run's stored value \"the preset's\""),
    (["train", "--resume", "{tmp}/cprun", "--timesteps", "99999"],
     "--timesteps 99999 conflicts with the run's stored value 4096"),
    (["train", "--resume", "{tmp}/cprun", "--preset", "acrobot"],
     "--preset acrobot conflicts with the run's stored preset 'cartpole'"),
    (["train", "--resume", "{tmp}/cprun", "--overwrite"],
     "--overwrite cannot be combined with --resume"),
    (["train", "--out", "{tmp}/a", "--resume", "{tmp}/cprun"], "name different runs"),
    (["train", "--resume"], "--resume without DIR continues the run in --out"),
    (["train", "--resume", "{tmp}/lmrun"], "holds a run of iif-ray train-lm"),
    (["train-lm", "--resume", "{tmp}/cprun"], "holds a run of iif-ray train,"),
    (["train-lm", "--resume", "{tmp}/lmrun", "--rounds", "9"],
     "--rounds 9 conflicts with the run's stored rounds=3"),
    (["train-lm", "--out", "{tmp}/lmrun", "--resume", "--epochs", "2"],
     "--epochs 2 conflicts with the run's stored epochs=4"),
    (["train-lm", "--out", "{tmp}/run", "--algo", "random", "--selection", "negative"],
     "algo 'random' takes selection 'random', got 'negative'"),
    (["train-lm", "--out", "{tmp}/run", "--selection", "worst"], "invalid choice: 'worst'"),
    (["train-lm", "--out", "{tmp}/run", "--num-scorers", "-1"],
     "num-scorers must be an integer >= 0, got '-1'"),
    (["train-lm", "--out", "{tmp}/run", "--num-gpus-per-learner", "64"],
     "ask for 64 GPU(s); this machine has"),
    (["train-lm", "--out", "{tmp}/run", "--num-gpus-per-rollout", "-1"],
     "num-gpus-per-rollout must be a number in [0, 1] or a whole number of GPUs (Ray's "
     "rule), got '-1'"),
    (["train-lm", "--out", "{tmp}/run", "--dtype", "float16"], "invalid choice: 'float16'"),
    (["train-lm", "--out", "{tmp}/run", "--task", "arith", "--reward-noise", "0.7"],
     "reward-noise must be a number in [0, 0.5], got '0.7'"),
    (["train-lm", "--out", "{tmp}/run", "--reward-noise", "0.3"],
     "reward_noise 0.3 needs task 'arith'"),
    (["train-lm", "--out", "{tmp}/run", "--task", "arith", "--eval-prompts", "501"],
     "eval_prompts 501 is more than arith's held-out problems; accepted: 1 to 500"),
    (["train-lm", "--out", "{tmp}/run", "--task", "arith", "--max-new-tokens", "4"],
     "max_new_tokens 4 cannot hold arith's longest answer and its EOS; accepted: >= 5"),
    (["train-lm", "--out", "{tmp}/run", "--task", "sorting"], "invalid choice: 'sorting'"),
    (["train-lm", "--out", "{tmp}/run", "--num-gpus-per-scorer", "1.5"],
     "num-gpus-per-scorer must be a number in [0, 1] or a whole number of GPUs (Ray's "
     "rule), got '1.5'"),
    (["train-lm", "--out", "{tmp}/run", "--scorer-timeout", "0"],
     "scorer-timeout must be a number > 0, got '0'"),
    (["train-lm", "--out", "{tmp}/run", "--prompts", "{tmp}/nowhere.jsonl"],
     "--prompts '{tmp}/nowhere.jsonl' is not a file"),
    (["train-lm", "--out", "{tmp}/run", "--prompts", "{tmp}/prompts.csv"],
     "accepted: a .jsonl, .parquet, .txt file"),
    # lm-checks
    (["lm-checks", "--out", "{tmp}/nodir/x.json"], "does not exist"),
    (["lm-checks", "--out", "{tmp}/x.json", "--model", "{tmp}/nowhere"],
     "is not a local model directory"),
    (["lm-checks", "--out", "{tmp}/x.json", "--seeds", "0"], "seeds must be >= 1, got '0'"),
    # evaluate
    (["evaluate", "{tmp}/nowhere"], "no policy snapshots under '{tmp}/nowhere/policies'"),
    (["evaluate", "{tmp}/empty", "--envs", "pong"], "--envs: unknown preset 'pong'; accepted:"),
    (["evaluate", "{tmp}/empty", "--every", "0"], "every must be >= 1, got '0'"),
    (["evaluate", "{tmp}/empty", "--min-episodes", "1"], "min-episodes must be >= 2, got '1'"),
    # report
    (["report", "{tmp}/nowhere"], "'{tmp}/nowhere' is not a directory"),
    (["report", "{tmp}/empty"], "no *rounds*.csv in '{tmp}/empty'"),
    (["report", "{tmp}/header"], "holds no rounds"),
    (["report", "{tmp}/garbled"], "lacks columns"),
    # bench
    (["bench", "scoring", "--presets", "pong"], "unknown preset 'pong'"),
    (["bench", "scoring", "--rounds", "1"], "rounds must be >= 2, got '1'"),
    (["bench", "pool", "--workloads", "huge"], "unknown workload(s) ['huge']"),
    # diagnose
    (["diagnose", "{tmp}/norun"], "is not a run (no summary.json, no run.json)"),
    (["diagnose", "{tmp}/norun", "--probes-out", "{tmp}/p.parquet"],
     "--probes-out needs --probe-round and --probe-action"),
    # submit: checked here, before anything is uploaded
    (["submit", "--", "iif-ray", "train", "--preset", "cartpol", "--out", "x"],
     "unknown preset 'cartpol'"),
    (["submit", "--", "iif-ray", "train", *CP, "--drop-fraction", "2", "--out", "x"],
     "must be a number in [0, 1), got '2'"),
    (["submit", "--", "iif-ray", "train-lm", "--out", "x", "--minibatch-size", "999"],
     "minibatch_size 999 is larger than a round's 256 sequences"),
    (["submit", "--"], "no command after '--'"),
    (["submit", "--", "iif-ray", "submit", "--", "x"], "cannot submit itself"),
    ([], "the following arguments are required: command"),
]


def _stored_runs(root) -> None:
    """An interrupted classic run (cprun) and LM run (lmrun): what --resume reads."""
    from iif_ray.driver import RunSpec
    from iif_ray.lm.spec import LMRunSpec
    from iif_ray.presets import get_preset
    from iif_ray.run import CLASSIC, LM, write_run_spec

    spec = RunSpec(preset=get_preset("cartpole"), timesteps=4096, out_dir=str(root / "cprun"))
    write_run_spec(root / "cprun", spec.to_dict(), CLASSIC)
    lm = LMRunSpec(model="m", out_dir=str(root / "lmrun"), rounds=3)
    write_run_spec(root / "lmrun", lm.to_dict(), LM)


def _files(root) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize(("argv", "message"), CASES,
                         ids=[" ".join(a)[:60] or "nothing" for a, _ in CASES])
def test_bad_input_is_refused_in_one_line(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IIF_RAY_CONNECT_TIMEOUT_S", "1")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    (tmp_path / "file.txt").write_text("not a directory")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "old.txt").write_text("an earlier run")
    (tmp_path / "empty").mkdir()
    (tmp_path / "header").mkdir()
    (tmp_path / "header" / "rounds.csv").write_text(
        "env,algo,seed,round,env_steps,eval_return,eval_episodes,train_return,frac_dropped,"
        "sampling_s,scoring_s,filter_s,update_s,eval_s,train_s\n")
    (tmp_path / "garbled").mkdir()
    (tmp_path / "garbled" / "rounds.csv").write_text("a,b\n1,2\n")
    _stored_runs(tmp_path)
    before = _files(tmp_path)

    code = main([a.replace("{tmp}", str(tmp_path)) for a in argv])

    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert message.replace("{tmp}", str(tmp_path)) in lines[0]
    assert lines[0].startswith("iif-ray")
    assert _files(tmp_path) == before, "a refused command must leave nothing behind"
    import ray

    assert not ray.is_initialized(), "refused before Ray starts"


def test_there_are_at_least_forty_cases():
    assert len(CASES) >= 40
