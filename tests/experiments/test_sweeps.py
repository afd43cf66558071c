"""Tune sweeps: a real short sweep exported and reported, grids and their experiment names."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import pandas as pd
import pytest

from iif_ray.reporting import classic
from tests.processes import kill_hard, start_marked


@pytest.mark.ray
@pytest.mark.slow
def test_short_tune_sweep_then_report(ray_local, tmp_path, monkeypatch):
    """Two real Tune trials (PPO and IIF, two rounds each), then the report from their CSV."""
    from iif_ray.cli import main

    monkeypatch.delenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", raising=False)
    out = tmp_path / "sweep"
    assert main(["sweep", "benchmark", "--envs", "cartpole", "--algos", "ppo,iif", "--seeds",
                 "1", "--budget-scale", "0.04", "--eval-episodes", "3",
                 "--out", str(out)]) == 0
    rounds = pd.read_csv(out / "rounds.csv")
    assert sorted(rounds.algo.unique()) == ["iif", "ppo"]
    assert rounds.groupby("algo")["round"].max().tolist() == [2, 2]
    assert (rounds.eval_episodes == 3).all() and rounds.eval_return.notna().all()
    iif = rounds[rounds.algo == "iif"]
    assert (iif.frac_dropped > 0).all() and (rounds[rounds.algo == "ppo"].frac_dropped == 0).all()
    assert ((rounds.train_s > 0) & (rounds.sampling_s > 0) & (rounds.update_s > 0)).all()

    (out / classic.BENCH_SB3).write_text("cartpole/envs=1: ours 1.00 s/round, SB3 0.50 s/round\n")
    assert main(["report", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "```\ncartpole/envs=1: ours 1.00 s/round, SB3 0.50 s/round\n```" in text
    assert "cartpole" in text and "SE_ave" in text
    assert ("**reduced budget**: 4,096 of the preset's 102,400 env steps (4%); early learning "
            "only (not in the paper)") in text
    assert (out / "curves_cartpole.png").stat().st_size > 1000


def test_head_init_ablation_grid_carries_the_init_and_its_label():
    """The ablation sweep changes only the model's output-layer init and the algo label."""
    from pathlib import Path

    from iif_ray.experiments.options import SweepOptions
    from iif_ray.experiments.results import LABEL_KEY
    from iif_ray.experiments.sweeps import grid_space, load_sweep
    from iif_ray.rllib import IIFPPO

    sweep = load_sweep(str(Path(__file__).parents[2] / "tune_experiments" / "head_init.py"))
    opts = SweepOptions(algos=["ppo", "iif"], seeds=2)
    plain, budget = grid_space("lunarlander", opts)
    ablation, ablation_budget = grid_space("lunarlander", sweep.ablation_options(opts))
    assert budget == ablation_budget == 307_200
    labels = [d[LABEL_KEY] for d in ablation["learner_config_dict"]["grid_search"]]
    assert labels == ["ppo-sb3init", "iif-sb3init"]
    assert ablation["seed"] == {"grid_search": [0, 1]}

    def trial_model(params):  # what a trial gets: Tune resolves the grid, RLlib from_dict
        params = {**params, "seed": 0,
                  "learner_config_dict": params["learner_config_dict"]["grid_search"][0]}
        return dict(IIFPPO.get_default_config().update_from_dict(params).model_config)

    got, base = trial_model(ablation), trial_model(plain)
    assert got.pop("head_output_gains") == {"pi": 0.01, "vf": 1.0}
    assert "head_output_gains" not in base and got == base


def test_grid_tag_separates_grids_and_repeats_for_the_same_command():
    from iif_ray.experiments.options import SweepOptions

    tag = SweepOptions().grid_tag()
    assert tag == "seeds0-2" and SweepOptions(envs=["acrobot"]).grid_tag() == tag
    others = {SweepOptions(seeds=2, first_seed=3).grid_tag(),
              SweepOptions(algos=["ppo"]).grid_tag(),
              SweepOptions(budget_scale=0.06).grid_tag(),
              SweepOptions(num_envs=8).grid_tag(),
              SweepOptions(eval_episodes=5).grid_tag()}
    assert len(others) == 5 and tag not in others
    assert SweepOptions(seeds=2, first_seed=3, algos=["ppo"]).grid_tag() == "seeds3-4-ppo"


def _trial_progress(out: Path) -> list[Path]:
    return sorted(out.glob("tune/*/*/progress.csv"))


def _rows(progress: Path) -> int:
    try:
        return max(len(progress.read_text().splitlines()) - 1, 0)
    except OSError:
        return 0


@pytest.mark.ray
@pytest.mark.slow
def test_a_killed_sweep_resumes_exactly(tmp_path):
    """Kill a sweep (and every process it started) mid-way, after a trial checkpoint and more
    rounds; rerun the same command: it says from which round it resumes, Tune's raw results
    repeat the rounds after that checkpoint, and ``rounds.csv`` still holds each round of the
    10-round budget exactly once."""
    out = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "iif_ray", "sweep", "benchmark", "--envs", "cartpole",
           "--algos", "ppo", "--seeds", "1", "--budget-scale", "0.2", "--eval-episodes", "2",
           "--checkpoint-every", "2", "--out", str(out)]
    # A private Ray for the sweep (not this process's, which ray.init advertises through
    # RAY_ADDRESS): killing the sweep must kill its trials too.
    env = {k: v for k, v in os.environ.items()
           if k not in ("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "RAY_ADDRESS")}
    first, marker = start_marked(cmd, env)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and first.poll() is None:
            progress = _trial_progress(out)
            if (progress and any(progress[0].parent.glob("checkpoint_*"))
                    and _rows(progress[0]) >= 5):
                break
            time.sleep(0.2)
        assert first.poll() is None, "the sweep ended before it could be interrupted"
        assert _rows(_trial_progress(out)[0]) >= 5, "no checkpoint and more rounds in time"
    finally:
        kill_hard(first, marker)
    assert not (out / "rounds.csv").exists()
    result_json = _trial_progress(out)[0].parent / "result.json"
    reported = max(json.loads(line)["training_iteration"]
                   for line in result_json.read_text().splitlines())

    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    resumed = re.search(r"resuming 1 trial\(s\): 0 finished, 1 from their round-(\d+) "
                        r"checkpoints", second.stdout)
    assert resumed, second.stdout[-2000:]
    checkpoint_round = int(resumed.group(1))
    assert checkpoint_round % 2 == 0 and 2 <= checkpoint_round <= reported < 10

    raw = pd.Series([json.loads(line)["training_iteration"]
                     for line in result_json.read_text().splitlines()])
    if reported > checkpoint_round:  # rounds after the checkpoint were reported, then redone
        assert raw.duplicated().any()
    rounds = pd.read_csv(out / "rounds.csv")
    assert not rounds.duplicated(["env", "algo", "seed", "round"]).any()
    assert rounds["round"].tolist() == list(range(1, 11))
    assert rounds.env_steps.tolist() == [2048 * r for r in range(1, 11)]


def test_rounds_file_keeps_one_row_per_round_latest_wins(tmp_path):
    """Merging never leaves a round twice, and a re-run round replaces the old value."""
    from iif_ray.reporting.rounds import ROUND_COLUMNS, merge_rounds

    def frame(rounds, value):
        return pd.DataFrame([{c: 0.0 for c in ROUND_COLUMNS} | {
            "env": "cartpole", "algo": "ppo", "seed": 0, "round": r, "eval_return": value}
            for r in rounds])

    path = tmp_path / "rounds.csv"
    merge_rounds(path, frame([1, 2, 3], 1.0))
    merged = merge_rounds(path, pd.concat([frame([1, 2, 3], 2.0), frame([3], 3.0)]))
    assert merged["round"].tolist() == [1, 2, 3]
    assert merged["eval_return"].tolist() == [2.0, 2.0, 3.0]
    assert pd.read_csv(path)["round"].tolist() == [1, 2, 3]


def test_sweeps_are_found_by_name_from_any_directory(tmp_path, monkeypatch):
    from iif_ray.experiments.sweeps import load_sweep

    monkeypatch.chdir(tmp_path)
    assert hasattr(load_sweep("benchmark"), "tuners")
    with pytest.raises(FileNotFoundError, match=r"tune_experiments/nope\.py"):
        load_sweep("nope")


def test_protocol_sweep_cells_carry_restart_init_and_labels():
    """The protocol grid: three cells beside the evidence grid's continuous RLlib-init one."""
    from pathlib import Path

    from iif_ray.experiments.options import SweepOptions
    from iif_ray.experiments.results import LABEL_KEY
    from iif_ray.experiments.sweeps import grid_space, load_sweep
    from iif_ray.rllib import IIFPPO
    from iif_ray.rllib.env_runner import RoundRestartEnvRunner

    sweep = load_sweep(str(Path(__file__).parents[2] / "tune_experiments" / "protocol.py"))
    opts = SweepOptions(algos=["ppo", "iif"], seeds=2)
    seen = {}
    for suffix in sweep.CELLS:
        params, _ = grid_space("lunarlander", sweep.cell_options(opts, suffix))
        variants = params["learner_config_dict"]["grid_search"]
        assert [d[LABEL_KEY] for d in variants] == [f"ppo{suffix}", f"iif{suffix}"]
        config = IIFPPO.get_default_config().update_from_dict(
            {**params, "seed": 0, "learner_config_dict": variants[1]})
        config.validate()
        seen[suffix] = (config.restart_per_round, config.env_runner_cls is RoundRestartEnvRunner,
                        "head_output_gains" in config.model_config)
    assert seen == {"-restart": (True, True, False), "-sb3init": (False, False, True),
                    "-restart-sb3init": (True, True, True)}


def test_drop_fraction_variants_for_the_sensitivity_grid():
    from iif_ray.presets import algo_settings

    assert algo_settings("iif-p0.25") == {"mode": "filter", "selection": "neg-bottom",
                                          "drop_fraction": 0.25}
    assert algo_settings("iif-negative") == {"mode": "filter", "selection": "negative"}
    for bad in ("iif-p1.5", "iif-pX", "iif-p0"):
        with pytest.raises(ValueError, match="iif-p<fraction> needs a fraction in"):
            algo_settings(bad)


def _count_to_three(config: dict) -> None:
    """Checks it got the grid's object (not Tune's placeholder); on its first call for
    ``a == 1`` it presses Ctrl-C in the driver, as a user stopping a sweep would."""
    from ray import tune

    assert config["kind"] is Fraction, config["kind"]
    flag = Path(config["flag"])
    if config["a"] == 1 and not flag.exists():
        flag.touch()
        os.kill(config["driver"], signal.SIGINT)
        time.sleep(20)  # Tune stops this trial before it reports
    for step in range(3):
        tune.report({"step": step, "a": config["a"]})


@pytest.mark.ray
@pytest.mark.slow
def test_an_interrupted_sweep_resumes_with_its_objects_under_a_grown_config(ray_local,
                                                                            tmp_path):
    """Ctrl-C stops a one-at-a-time grid in its first trial, before Tune made the others;
    the same command under a newer iif-ray whose config has one more key resumes it. Tune
    keeps the grid's objects (RLlib configs hold classes) only as placeholders that a re-passed
    ``param_space`` resolves, and refuses one whose keys changed: every trial must still get
    the object and finish."""
    from ray import tune

    from iif_ray.experiments.sweeps import resumable_tuner, space_for_restore

    run_config = tune.RunConfig(name="grows", storage_path=str(tmp_path), verbose=0)
    space = {"a": tune.grid_search([1, 2, 3]), "kind": Fraction,
             "flag": str(tmp_path / "pressed"), "driver": os.getpid()}
    lines: list[str] = []

    def sweep(param_space: dict):
        return resumable_tuner(_count_to_three, param_space=param_space, run_config=run_config,
                               tune_config=tune.TuneConfig(max_concurrent_trials=1),
                               echo=lines.append).fit()

    first = sweep(space)
    assert (tmp_path / "pressed").exists() and len(first) < 3
    assert not any(r.metrics.get("done") for r in first)
    # What a resume could not refresh is said, not guessed at.
    stored = tmp_path / "grows"
    assert space_for_restore({"a": space["a"]}, stored)[1] == (
        "this version's grid lacks 3 of its keys (first: 'driver')")
    assert "unreadable here" in space_for_restore(space, tmp_path / "elsewhere")[1]
    results = sweep({**space, "new_key": 0})
    assert "starting fresh" in lines[0] and "resuming 1 trial(s): 0 finished" in lines[1]
    assert results.num_errors == 0, [r.error for r in results]
    assert sorted(r.metrics["a"] for r in results) == [1, 2, 3]


def _counter_trainable():
    import pickle

    from ray import tune

    class Counter(tune.Trainable):
        """Counts rounds; its checkpoint holds the count as RLlib's algorithm state does.
        Fails in round 3 of its first life, so the sweep stops with a checkpoint behind."""

        def setup(self, config: dict) -> None:
            self.flag = Path(config["flag"])
            self.restored_from = 0

        def step(self) -> dict:
            if self.iteration + 1 == 3 and not self.flag.exists():
                self.flag.touch()
                raise RuntimeError("stopped in round 3")
            return {"restored_from": self.restored_from}

        def save_checkpoint(self, checkpoint_dir: str) -> None:
            with open(Path(checkpoint_dir) / "algorithm_state.pkl", "wb") as f:
                pickle.dump({"training_iteration": self.iteration}, f)

        def load_checkpoint(self, checkpoint_dir: str) -> None:
            with open(Path(checkpoint_dir) / "algorithm_state.pkl", "rb") as f:
                self.restored_from = pickle.load(f)["training_iteration"]

    return Counter


@pytest.mark.ray
@pytest.mark.slow
def test_a_resume_gives_back_a_checkpoint_tune_rotated_away(ray_local, tmp_path):
    """Tune deletes a trial's previous checkpoint as soon as it registers the next, but
    writes its experiment state seconds later: a sweep stopped in between names a deleted
    checkpoint, and Tune's restore fails on it every time. Here the state names
    checkpoint_000001 and the disk holds only checkpoint_000002 (renamed into place, as Tune
    leaves it); the resume copies it back under the expected name and the trial finishes
    from its round."""
    from ray import tune

    from iif_ray.experiments.sweeps import resumable_tuner

    run_config = tune.RunConfig(
        name="rotated", storage_path=str(tmp_path), verbose=0, stop={"training_iteration": 5},
        checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=1, num_to_keep=1),
        failure_config=tune.FailureConfig(max_failures=0))
    lines: list[str] = []

    def sweep():
        return resumable_tuner(_counter_trainable(), param_space={"flag": str(tmp_path / "f")},
                               run_config=run_config, echo=lines.append).fit()

    first = sweep()
    assert first.num_errors == 1
    trial_dir = Path(first[0].path)
    assert [p.name for p in trial_dir.glob("checkpoint_*")] == ["checkpoint_000001"]
    (trial_dir / "checkpoint_000001").rename(trial_dir / "checkpoint_000002")

    results = sweep()
    assert results.num_errors == 0, [r.error for r in results]
    assert any("names checkpoint_000001, which it had replaced by checkpoint_000002 "
               "(round 2)" in line for line in lines), lines
    assert "1 from their round-2 checkpoints" in lines[-1], lines
    assert results[0].metrics["training_iteration"] == 5
    assert results[0].metrics["restored_from"] == 2
