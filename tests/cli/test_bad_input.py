"""Every bad input is refused before Ray starts: exit status 2, one line that names the value
(and, where there is one, the accepted range), no traceback, and nothing written.

``{tmp}`` in an argument is the test's scratch directory, which is also the working
directory (so a command's default output directory would show up as a leftover too).
"""

from __future__ import annotations

import os

import gymnasium as gym
import numpy as np
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
    (["train", *CP, "--out", "{tmp}/file.txt"], "is a file, not a directory"),
    (["train", *CP, "--out", "{tmp}/full"], "is not empty and holds no iif-ray run"),
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
     "algo 'random' takes selection 'random' or 'neg-random', got 'negative'"),
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
    (["lm-checks", "--out", "{tmp}/x.json", "--task", "sorting"], "invalid choice: 'sorting'"),
    (["lm-checks", "--out", "{tmp}/x.json", "--task", "arith", "--sequences", "20"],
     "--sequences 20: arith's records come in groups of 8 answers to one prompt; accepted: "
     "a multiple of 8"),
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
    (["bench", "sb3", "--num-envs", "1,3"], "--num-envs '1,3': accepted: comma-separated "
                                            "divisors of the round's 2048 steps"),
    (["bench", "sb3", "--rounds", "0"], "rounds must be >= 1, got '0'"),
    # diagnose
    (["diagnose", "{tmp}/norun"], "run '{tmp}/norun' holds none of ['run.json'"),
    (["diagnose", "{tmp}/norun", "--probes-out", "{tmp}/p.parquet"],
     "--probes-out needs --probe-round and --probe-action"),
    # run directories: never emptied unless recognisably a run of ours, never cwd or home
    (["train", *CP, "--out", ""], "--out '' is an empty path"),
    (["train", *CP, "--out", "", "--overwrite"], "--out '' is an empty path"),
    (["train", *CP, "--out", ".", "--overwrite"], "--out '.' holds files but no iif-ray run"),
    (["train", *CP, "--out", "{tmp}/full", "--overwrite"],
     "holds files but no iif-ray run (none of ['run.json'"),
    (["train", *CP, "--out", "{tmp}/home", "--overwrite"], "holds files but no iif-ray run"),
    (["train", *CP, "--out", "{tmp}/ourhome", "--overwrite"],
     "is the home directory; --overwrite replaces only a run directory of its own"),
    (["train-lm", "--out", "", "--overwrite"], "--out '' is an empty path"),
    (["train-lm", "--out", "{tmp}/full", "--overwrite"], "holds files but no iif-ray run"),
    (["demo", "--out", "{tmp}/full"], "holds files but no iif-ray run (none of ['sweep.json'"),
    (["demo", "--out", ""], "--out '' is an empty path"),
    (["demo", "--out", "."], "--out '.' holds files but no iif-ray run"),
    (["demo", "--out", "{tmp}/home"], "holds files but no iif-ray run"),
    (["sweep", "benchmark", "--out", "{tmp}/full"], "holds files but no iif-ray run"),
    (["sweep", "benchmark", "--out", ""], "--out '' is an empty path"),
    (["lm-checks", "--out", "{tmp}/full"], "is a directory; accepted: a JSON file path"),
    (["lm-checks", "--out", "{tmp}/file.txt"], "exists; pass --overwrite to replace it"),
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
    # train: observation spaces no model here takes, refused naming the space
    (["train", "--env", "Blackjack-v1", *OUT],
     "Blackjack-v1 has observations Tuple(Discrete(32), Discrete(11), Discrete(2))"),
    (["train", "--env", "CarRacing-v3", *OUT],
     "CarRacing-v3 has observations Box(0, 255, (96, 96, 3), uint8), which no model"),
    (["train", "--env", "iif-test/DictObservation-v0", *OUT],
     "iif-test/DictObservation-v0 has observations Dict("),
    # train --resume: a run.json or checkpoint cut short is named
    (["train", "--resume", "{tmp}/cut"], "run.json' is not a run spec (truncated or not JSON"),
    (["train", "--resume", "{tmp}/cpckpt"],
     "checkpoint file '{tmp}/cpckpt/checkpoint/algorithm_state.pkl' is truncated"),
    (["train", "--resume", "{tmp}/partial"], "its run.json lacks the preset, algo or seed"),
    (["train", "--resume", "{tmp}/cprun", "--selection", "negative"],
     "--selection negative conflicts with the run's stored value \"the preset's\""),
    (["train", "--resume", "{tmp}/cprun", "--num-env-runners", "1"],
     "--num-env-runners 1 conflicts with the run's stored value 0"),
    (["train", "--resume", "{tmp}/cprun", "--num-learners", "1"],
     "--num-learners 1 conflicts with the run's stored value 0"),
    (["train", "--resume", "{tmp}/cprun", "--checkpoint-every", "3"],
     "--checkpoint-every 3 conflicts with the run's stored value 10"),
    # train-lm: the model directory (config, weights, tokenizer), before Ray starts
    (["train-lm", *OUT, "--model", "{lm}/badjson"], "config.json is not JSON"),
    (["train-lm", *OUT, "--model", "{lm}/emptycfg"], "config.json names no model_type"),
    (["train-lm", *OUT, "--model", "{lm}/noweights"],
     "holds no weights (none of model.safetensors,"),
    (["train-lm", *OUT, "--model", "{lm}/cutweights"],
     "weights file model.safetensors is truncated"),
    (["train-lm", *OUT, "--model", "{lm}/nopad"], "neither a pad nor an eos token"),
    (["train-lm", *OUT, "--model", "{lm}/clf"], "is a classifier (architectures"),
    (["train-lm", *OUT, "--model", "{tmp}/file.txt"], "is not a local model directory"),
    # train-lm: the reward classifier and its label
    (["train-lm", *OUT, "--reward", "{lm}/model"],
     "has no sequence-classification head (architectures ['LlamaForCausalLM'])"),
    (["train-lm", *OUT, "--reward", "{lm}/clf", "--reward-label", "good"],
     "--reward-label 'good' is not a label of '{lm}/clf'; accepted: ['hate', 'nothate']"),
    (["train-lm", *OUT, "--reward-label", "nothate"],
     "--reward-label 'nothate' needs --reward DIR"),
    (["train-lm", *OUT, "--reward", "{lm}/badjson"], "config.json is not JSON"),
    # train-lm: the prompts file (encoding, format, length against the model's context)
    (["train-lm", *OUT, "--prompts", "{tmp}/latin.txt"],
     "--prompts '{tmp}/latin.txt' is not UTF-8 text"),
    (["train-lm", *OUT, "--prompts", "{tmp}/latin.jsonl"],
     "--prompts '{tmp}/latin.jsonl' is not UTF-8 text"),
    (["train-lm", *OUT, "--prompts", "{tmp}/fake.parquet"],
     "--prompts '{tmp}/fake.parquet' is not a Parquet file"),
    (["train-lm", *OUT, "--prompts", "{tmp}/bad.jsonl"], "line 2 is not a JSON object"),
    (["train-lm", *OUT, "--model", "{lm}/model", "--prompts", "{tmp}/long.txt"],
     "1 prompt(s) longer than 115 tokens (the longest, 300 tokens"),
    (["train-lm", *OUT, "--model", "{lm}/model", "--prompts", "{tmp}/ok.txt",
      "--max-new-tokens", "200"], "--max-new-tokens 200 leaves no room for a prompt"),
    # train-lm: CPUs of the embedded Ray, as train checks them
    (["train-lm", *OUT, "--num-scorers", "64"],
     "--num-scorers 64 (x --cpus-per-scorer 1), --rollout-cpus 1 and --learner-cpus 1 need "
     "66 CPUs; the embedded Ray has"),
    (["train-lm", *OUT, "--learner-cpus", "64"], "need 65 CPUs; the embedded Ray has"),
    # train-lm --resume: flags that would change the run, files cut short
    (["train-lm", "--resume", "{tmp}/lmrun", "--lora-rank", "4"],
     "--lora-rank 4 conflicts with the run's stored lora_rank=8"),
    (["train-lm", "--resume", "{tmp}/lmrun", "--seed", "3"],
     "--seed 3 conflicts with the run's stored seed=0"),
    (["train-lm", "--resume", "{tmp}/lmrun", "--algo", "ppo"],
     "--algo ppo conflicts with the run's stored algo='iif'"),
    (["train-lm", "--resume", "{tmp}/lmrun", "--drop-fraction", "0.3"],
     "--drop-fraction 0.3 conflicts with the run's stored drop_fraction=0.5"),
    (["train-lm", "--resume", "{tmp}/lmrun", "--model", "{lm}/model"],
     "conflicts with the run's stored model 'm'"),
    (["train-lm", "--resume", "{tmp}/lmrun", "--num-gpus-per-learner", "0"],
     "the run's model 'm' is not a local model directory"),
    (["train-lm", "--resume", "{tmp}/cut"], "run.json' is not a run spec (truncated"),
    (["train-lm", "--resume", "{tmp}/lmpartial"], "run.json' is not an LM run spec"),
    (["train-lm", "--resume", "{tmp}/lmckpt"],
     "checkpoint file '{tmp}/lmckpt/checkpoint/learner.pt' is truncated"),
    # bench: numeric options, presets, workloads and the pool's size
    (["bench", "sb3", "--num-envs", "abc"],
     "--num-envs 'abc': accepted: comma-separated divisors of the round's"),
    (["bench", "sb3", "--num-envs", "0"], "--num-envs '0': accepted"),
    (["bench", "sb3", "--presets", "pong"], "--presets: unknown preset 'pong'"),
    (["bench", "sb3", "--presets", "minigrid"], "minigrid use(s) a CNN"),
    (["bench", "scoring", "--presets", ","], "--presets ',' names no preset"),
    (["bench", "pool", "--max-scorers", "64"], "--max-scorers 64: a pool uses one CPU per"),
    (["bench", "pool", "--max-scorers", "0"], "max-scorers must be >= 1, got '0'"),
    (["bench", "pool", "--reps", "abc"], "reps must be an integer, got 'abc'"),
    (["bench", "lm", "--minibatches", "0"], "--minibatches '0': accepted: comma-separated"),
    (["bench", "lm", "--minibatches", "512"], "integers from 1 to --sequences 256"),
    (["bench", "lm", "--model", "{lm}/noweights"], "holds no weights"),
    (["bench", "lm", "--sequences", "1"], "sequences must be >= 2, got '1'"),
    (["bench", "gpu"], "invalid choice: 'gpu'"),
    # sweep: a file that is not a sweep
    (["sweep", "{tmp}/file.txt"], "is not a Python file; accepted: a Python file defining"),
    (["sweep", "{tmp}/notsweep.py"], "defines no tuners(opts) function"),
    (["sweep", "{tmp}/broken.py"], "does not import (SyntaxError"),
    (["sweep", "{tmp}/raises.py"], "does not import (RuntimeError: not today)"),
    # evaluate: a sweep's evals.csv cut short
    (["evaluate", "{tmp}/cutevals"], "evals.csv' line 3 has 5 of 10 fields (cut short?)"),
    (["evaluate", "{tmp}/cutevals", "--every", "abc"], "every must be an integer, got 'abc'"),
    # report: rounds.csv and evals.csv cut short, not UTF-8, empty
    (["report", "{tmp}/cutevals"], "evals.csv' line 3 has 5 of 10 fields (cut short?)"),
    (["report", "{tmp}/cutrounds"], "rounds.csv' line 3 has 4 of 15 fields"),
    (["report", "{tmp}/latinrounds"], "rounds.csv' is not a CSV file (UnicodeDecodeError)"),
    (["report", "{tmp}/zerorounds"], "rounds.csv' is empty"),
    # diagnose: --intervene only on rounds the run trained, on a classic run with a ledger
    (["diagnose", "{tmp}/five", "--intervene", "99"],
     "--intervene 99: '{tmp}/five' trained 5 round(s); accepted: rounds 1 to 5"),
    (["diagnose", "{tmp}/five", "--intervene", "2,6,7"], "--intervene 6,7:"),
    (["diagnose", "{tmp}/lmrun", "--intervene", "2"], "for an LM run use iif-ray lm-checks"),
    (["diagnose", "{tmp}/cprun", "--intervene", "2"], "has no ledger/"),
    (["diagnose", "{tmp}/empty", "--intervene", "1"], "holds none of ['run.json'"),
    (["diagnose", "{tmp}/five", "--intervene", "0"], "expected rounds >= 1 like 2,5,10"),
    (["diagnose", "{tmp}/five", "--seeds", "0"], "seeds must be >= 1, got '0'"),
    # lm-checks: the model directory
    (["lm-checks", "--out", "{tmp}/x.json", "--model", "{lm}/badjson"],
     "config.json is not JSON"),
    (["lm-checks", "--out", "{tmp}/x.json", "--model", "{lm}/clf"], "is a classifier"),
    (["lm-checks", "--out", "{tmp}/x.json", "--sequences", "4"],
     "sequences must be >= 8, got '4'"),
    # demo
    (["demo", "--seeds", "abc"], "seeds must be an integer >= 1, got 'abc'"),
    (["demo", "--rounds", "-1"], "rounds must be an integer >= 1, got '-1'"),
    # submit: a job's command is checked as it would be here (files aside)
    (["submit", "--", "iif-ray", "train", "--env", "Blackjack-v1", "--out", "x"],
     "Blackjack-v1 has observations Tuple("),
    (["submit", "--", "iif-ray", "train-lm", "--out", "x", "--reward-label", "nothate"],
     "--reward-label 'nothate' needs --reward DIR"),
    (["submit", "--", "iif-ray", "bench", "sb3", "--num-envs", "abc"], "--num-envs 'abc'"),
    (["submit", "--", "iif-ray", "bench", "lm", "--minibatches", "0"], "--minibatches '0'"),
]


class DictObservationEnv(gym.Env):
    """A one-step env with a Dict observation that holds no image: no model here takes it."""

    observation_space = gym.spaces.Dict({"position": gym.spaces.Box(-1.0, 1.0, (2,), np.float32),
                                         "flag": gym.spaces.Discrete(2)})
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, True, False, {}


def _register_test_env() -> None:
    if "iif-test/DictObservation-v0" not in gym.registry:
        gym.register("iif-test/DictObservation-v0", entry_point=DictObservationEnv,
                     max_episode_steps=1)


@pytest.fixture(scope="module")
def lm_dirs(tmp_path_factory):
    """Model directories as a user's could be: whole, cut short, or of the wrong kind.
    Outside the scratch directory (built once); none of them is written by a command."""
    import shutil

    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    from iif_ray.lm.models import tiny_llama, word_tokenizer

    root = tmp_path_factory.mktemp("lm")
    tok = word_tokenizer(["good", "kind", "idiot", "the"])
    model = root / "model"
    tiny_llama(len(tok), hidden=16, intermediate=32, layers=1, heads=2).save_pretrained(model)
    tok.save_pretrained(model)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                         num_labels=2, id2label={0: "hate", 1: "nothate"},
                         label2id={"hate": 0, "nothate": 1}, pad_token_id=0)
    torch.manual_seed(0)
    LlamaForSequenceClassification(config).save_pretrained(root / "clf")
    tok.save_pretrained(root / "clf")
    for name in ("badjson", "emptycfg", "noweights", "cutweights", "nopad"):
        shutil.copytree(model, root / name)
    (root / "badjson" / "config.json").write_text('{"model_type": "llama", ')
    (root / "emptycfg" / "config.json").write_text("{}")
    (root / "noweights" / "model.safetensors").unlink()
    weights = (model / "model.safetensors").read_bytes()
    (root / "cutweights" / "model.safetensors").write_bytes(weights[:len(weights) // 2])
    nopad = AutoTokenizer.from_pretrained(model)
    nopad.pad_token = nopad.eos_token = None
    nopad.save_pretrained(root / "nopad")
    return root


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


def _broken_runs(root) -> None:
    """Run directories cut short or incomplete, as a copy, a kill or a full disk leaves
    them, and a five-round classic run with a ledger (what --intervene reads)."""
    import shutil

    from iif_ray.run import PROGRESS

    (root / "cut").mkdir()
    (root / "cut" / "run.json").write_text('{"kind": "classic", "preset": {"na')
    (root / "partial").mkdir()
    (root / "partial" / "run.json").write_text('{"kind": "classic", "algo": "iif"}')
    (root / "lmpartial").mkdir()
    (root / "lmpartial" / "run.json").write_text('{"kind": "lm", "model": "m"}')
    shutil.copytree(root / "cprun", root / "cpckpt")
    (root / "cpckpt" / "checkpoint").mkdir()
    (root / "cpckpt" / "checkpoint" / "rllib_checkpoint.json").write_text("{}")
    # A pickle cut mid-way: its opcodes end before STOP.
    import pickle

    blob = pickle.dumps({"weights": list(range(1000))})
    (root / "cpckpt" / "checkpoint" / "algorithm_state.pkl").write_bytes(blob[:len(blob) // 2])
    shutil.copytree(root / "lmrun", root / "lmckpt")
    (root / "lmckpt" / "checkpoint").mkdir()
    (root / "lmckpt" / "checkpoint" / "learner.pt").write_bytes(b"PK\x03\x04" + b"\0" * 60)
    shutil.copytree(root / "cprun", root / "five")
    (root / "five" / PROGRESS).write_text(
        "round,env_steps\n" + "".join(f"{k},{512 * k}\n" for k in range(1, 6)))
    (root / "five" / "ledger").mkdir()
    (root / "five" / "ledger" / "round_0001.parquet").write_bytes(b"rows")


def _bad_files(root) -> None:
    """Prompts, sweep and CSV files that are not what their commands accept."""
    from iif_ray.reporting.rounds import EVAL_COLUMNS, ROUND_COLUMNS

    (root / "latin.txt").write_bytes("good\ncaf\u00e9 kind\n".encode("latin-1"))
    (root / "latin.jsonl").write_bytes('{"prompt": "caf\u00e9"}\n'.encode("latin-1"))
    (root / "fake.parquet").write_text("prompt\ngood\nkind\n")
    (root / "bad.jsonl").write_text('{"prompt": "good"}\n{"prompt": "kind"\n')
    (root / "ok.txt").write_text("good kind\nthe good\n")
    (root / "long.txt").write_text("good kind\nthe good\n" + "good " * 300 + "\n")
    (root / "notsweep.py").write_text("GRID = [1, 2]\n")
    (root / "broken.py").write_text("def tuners(opts)\n    return []\n")
    (root / "raises.py").write_text("raise RuntimeError('not today')\n")
    round_row = ",".join(["frozenlake", "ppo", "0", "1"] + ["1"] * 11)
    for name, rounds in (("cutrounds", f"{round_row}\nfrozenlake,ppo,0,2\n"),
                         ("cutevals", f"{round_row}\n")):
        (root / name).mkdir()
        (root / name / "rounds.csv").write_text(",".join(ROUND_COLUMNS) + "\n" + rounds)
    (root / "cutevals" / "evals.csv").write_text(
        ",".join(EVAL_COLUMNS) + "\nfrozenlake,ppo,0,0,0.5,0,0,exact,0.1,ab12\n"
        "frozenlake,ppo,0,1,0.7\n")
    seed0 = root / "cutevals" / "policies" / "frozenlake" / "ppo" / "seed0"
    seed0.mkdir(parents=True)
    (seed0 / "module_spec.pkl").write_bytes(b"spec")
    (seed0 / "round_0000.pt").write_bytes(b"weights")
    (root / "latinrounds").mkdir()
    (root / "latinrounds" / "rounds.csv").write_bytes("env,algo\ncaf\u00e9,ppo\n".encode("latin-1"))
    (root / "zerorounds").mkdir()
    (root / "zerorounds" / "rounds.csv").write_text("")


def _files(root) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes: a refused command changes none of them."""
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None
            for p in root.rglob("*")}


@pytest.mark.parametrize(("argv", "message"), CASES,
                         ids=[" ".join(a)[:60] or "nothing" for a, _ in CASES])
def test_bad_input_is_refused_in_one_line(tmp_path, monkeypatch, capsys, lm_dirs, argv,
                                          message):
    _register_test_env()
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
    _broken_runs(tmp_path)
    _bad_files(tmp_path)
    (tmp_path / "home").mkdir()  # a home directory: a user's files
    (tmp_path / "home" / "thesis.tex").write_text("years of work")
    (tmp_path / "ourhome").mkdir()  # a home directory that even looks like a run of ours
    (tmp_path / "ourhome" / "run.json").write_text("{}")
    for home in ("home", "ourhome"):  # the cases that name a home directory make it HOME
        if f"{{tmp}}/{home}" in argv:
            # libraries keep their caches where they were (matplotlib's is under HOME)
            monkeypatch.setenv("MPLCONFIGDIR", os.environ.get(
                "MPLCONFIGDIR", os.path.expanduser("~/.config/matplotlib")))
            monkeypatch.setenv("HOME", str(tmp_path / home))
    before = _files(tmp_path)
    lm_before = _files(lm_dirs)

    def fill(text: str) -> str:
        return text.replace("{tmp}", str(tmp_path)).replace("{lm}", str(lm_dirs))

    code = main([fill(a) for a in argv])

    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert fill(message) in lines[0]
    assert lines[0].startswith("iif-ray")
    assert _files(tmp_path) == before, "a refused command must leave nothing behind"
    assert _files(lm_dirs) == lm_before, "checking a model directory writes nothing into it"
    import ray

    assert not ray.is_initialized(), "refused before Ray starts"


def test_there_are_at_least_120_cases():
    assert len(CASES) >= 120
    assert len({(tuple(a), m) for a, m in CASES}) == len(CASES), "a case repeated"


@pytest.mark.ray
def test_a_pool_larger_than_the_cluster_is_refused_after_ray_starts(ray_local):
    """On a cluster (``--address``) the CPU count is known only once Ray is joined, so the
    bound on ``bench pool --max-scorers`` is checked there: refused before any pool is built,
    instead of waiting for CPUs without end."""
    from iif_ray.experiments.speed import bench_pool

    cpus = int(ray_local.cluster_resources()["CPU"])
    lines: list[str] = []
    with pytest.raises(ValueError, match=f"--max-scorers {cpus + 1}: a pool uses one CPU per "
                                         f"scorer and the cluster has {cpus}; accepted: 1 to "):
        bench_pool(["lunarlander-2k"], cpus + 1, reps=1, echo=lines.append)
    assert lines == []  # refused before anything was measured
