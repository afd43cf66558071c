"""The LM engine end to end on Ray: one rollout actor, one reward actor, one learner."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
import torch

from iif_ray.lm.learner import UpdateSettings
from iif_ray.lm.spec import LMRunSpec
from iif_ray.lm.trainer import fit
from iif_ray.run import PROGRESS as PROGRESS_CSV
from iif_ray.run import SUMMARY


def _spec(model, out, **kw) -> LMRunSpec:
    base = dict(rounds=2, prompts_per_round=8, group_size=2, validation_prompts=8,
                eval_every=2, eval_prompts=8, lora_rank=2)
    update = UpdateSettings(**{"epochs": 1, "minibatch_size": 4, **kw.pop("update", {})})
    return LMRunSpec(model=str(model), out_dir=str(out), update=update, **{**base, **kw})


@pytest.mark.ray
@pytest.mark.parametrize(("algo", "estimator", "scorers", "dtype"),
                         [("iif", "ppo", 1, "float32"), ("random", "grpo", 0, "float32"),
                          ("iif", "ppo", 0, "bfloat16")])
@pytest.mark.slow
def test_two_rounds_end_to_end(ray_local, tiny_model_dir, tmp_path, algo, estimator, scorers,
                               dtype):
    """One rollout actor, one reward actor, one learner and (IIF) one scorer actor; also
    with the base model's weights in bfloat16, as on a GPU."""
    # No CPU reserved for the scorer: the suite's Ray has two, the rollout and learner hold them.
    spec = _spec(tiny_model_dir, tmp_path / algo, algo=algo, num_scorers=scorers,
                 cpus_per_scorer=0, update={"estimator": estimator}, dtype=dtype)
    summary = fit(spec, echo=lambda _: None)
    progress = pd.read_csv(tmp_path / algo / PROGRESS_CSV)
    assert progress["round"].tolist() == [1, 2]
    assert (progress.rows_updated % 4 == 0).all() and (progress.rows_updated <= 16).all()
    assert (progress.frac_dropped > 0).any()  # IIF and its control both drop rows
    assert (progress.scoring_s > 0).all() and (progress.update_s > 0).all()
    assert progress.eval_toxic_rate.notna().tolist() == [False, True]
    assert progress.reward_mean.notna().all()  # detox-mini's log-odds: any real number
    # The ledger: every record of every round, dropped ones included, as the round saw it.
    from iif_ray.ledger import SEQUENCE_LEDGER_SCHEMA, read_ledger

    ledger = read_ledger(str(tmp_path / algo / "ledger")).to_pandas()
    assert list(ledger.columns) == list(SEQUENCE_LEDGER_SCHEMA)
    assert ledger.groupby("iteration").size().tolist() == [16, 16]
    assert ledger.groupby("iteration").kept.sum().tolist() == progress.rows_updated.tolist()
    assert ledger.score.notna().all() and ledger.response_tokens.between(1, 12).all()
    assert (ledger.groupby(["iteration", "group"]).prompt.nunique() == 1).all()
    assert ledger.reward.mean() == pytest.approx(progress.reward_mean.mean(), rel=1e-5)
    assert len(summary["rounds"]) == 2 and (tmp_path / algo / SUMMARY).exists()


@pytest.mark.ray
@pytest.mark.slow
def test_scorer_actors_give_the_learners_scores(ray_local, tiny_model_dir, tmp_path):
    """Two scorer actors, each a shard: the same scores as the learner's own, in row order,
    also when one of them dies between rounds."""
    import ray

    from iif_ray.lm import detox
    from iif_ray.lm.advantages import advantages
    from iif_ray.lm.generation import SamplingSettings, sample_records
    from iif_ray.lm.scorers import ActorPoolScorer, LearnerScorer
    from iif_ray.lm.workers import LearnerWorker

    spec = _spec(tiny_model_dir, tmp_path)
    threads = torch.get_num_threads()
    try:  # the actor body sets one thread: give this process its count back
        local = LearnerWorker(spec)
    finally:
        torch.set_num_threads(threads)
    learner = ray.remote(num_cpus=0)(LearnerWorker).remote(spec)
    lang = detox.Language.build(0)
    from iif_ray.lm.models import load_policy

    _, tokenizer = load_policy(str(tiny_model_dir))
    batch = sample_records(local.learner.policy.model, tokenizer,
                           lang.prompts(6, split="train"), SamplingSettings(), seed=0)
    rewards = torch.linspace(-1, 1, 6)
    full, _, _ = advantages(spec, batch, rewards, local.prepare(batch), 0.05)
    weights = batch.response_mask.float() / 6
    expected = local.scores(full, batch, weights, "ghost")
    args = (full, batch, weights)
    policy_weights = ray.put(local.adapter_weights())
    # One signature for both scorers (iif_ray.scoring.SequenceScorer).
    in_learner = LearnerScorer(learner, "ghost").score(*args, policy_weights=policy_weights)
    torch.testing.assert_close(in_learner, expected, rtol=1e-5, atol=1e-8)
    pool = ActorPoolScorer(spec, learner, 2, num_cpus=0)
    try:
        got = pool.score(*args, policy_weights=policy_weights)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-8)
        # A scorer that dies is replaced and its shard re-scored: the same scores, one retry.
        ray.kill(pool.actors[1])
        again = pool.score(*args, policy_weights=policy_weights)
    finally:
        pool.shutdown()
        ray.kill(learner)
    assert pool.total_retries == 1
    torch.testing.assert_close(again, got, rtol=0, atol=0)


class _Killed(RuntimeError):
    pass


def _file_bytes(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.ray
@pytest.mark.slow
def test_a_killed_lm_run_resumes_exactly(ray_local, tiny_model_dir, tmp_path):
    """Killed during round 3 (round 2 checkpointed, round 3's progress row written), then
    copied elsewhere and the copy resumed: every round once, the same figures as a run never
    interrupted, and the original directory byte for byte as it was."""
    from iif_ray.lm.spec import read_spec
    from iif_ray.run import learner_state_path

    kw = dict(rounds=4, checkpoint_every=2, eval_every=2, algo="random")
    straight = _spec(tiny_model_dir, tmp_path / "straight", **kw)
    fit(straight, echo=lambda _: None)

    def kill_in_round_3(line: str) -> None:
        if line.startswith("round 3/"):
            raise _Killed

    killed = _spec(tiny_model_dir, tmp_path / "killed", **kw)
    with pytest.raises(_Killed):
        fit(killed, echo=kill_in_round_3)
    assert not (tmp_path / "killed" / SUMMARY).exists()
    assert pd.read_csv(tmp_path / "killed" / PROGRESS_CSV)["round"].tolist() == [1, 2, 3]
    # Resumed as a copy in another place: the copy continues, the original is not touched.
    shutil.copytree(tmp_path / "killed", tmp_path / "moved" / "copy")
    original = _file_bytes(tmp_path / "killed")
    lines: list[str] = []
    fit(read_spec(tmp_path / "moved" / "copy"), echo=lines.append, resume=True)
    assert _file_bytes(tmp_path / "killed") == original
    assert lines[0].endswith("after round 2 (its checkpoint)")
    a = pd.read_csv(tmp_path / "straight" / PROGRESS_CSV)
    b = pd.read_csv(tmp_path / "moved" / "copy" / PROGRESS_CSV)
    assert b["round"].tolist() == [1, 2, 3, 4]
    figures = ["reward_mean", "kl", "kl_beta", "frac_dropped", "rows_updated", "eval_reward"]
    pd.testing.assert_frame_equal(a[figures], b[figures])
    assert learner_state_path(tmp_path / "moved" / "copy").exists()
    from iif_ray.ledger import read_ledger

    ledgers = [read_ledger(str(tmp_path / d / "ledger")).to_pandas()
               for d in ("straight", "moved/copy")]
    assert ledgers[1].groupby("iteration").size().index.tolist() == [1, 2, 3, 4]
    pd.testing.assert_frame_equal(ledgers[0], ledgers[1])


def test_spec_refuses_bad_values():
    with pytest.raises(ValueError, match=r"algo must be one of .*, got 'dpo'"):
        LMRunSpec(model="m", out_dir="o", algo="dpo")
    with pytest.raises(ValueError, match="grpo needs group_size >= 2"):
        LMRunSpec(model="m", out_dir="o", group_size=1, update=UpdateSettings(estimator="grpo"))
    with pytest.raises(ValueError, match=r"drop_fraction must be a number in \[0, 1\)"):
        LMRunSpec(model="m", out_dir="o", drop_fraction=1.0)
    with pytest.raises(ValueError, match=r"minibatch_size 64 is larger than a round's 8"):
        LMRunSpec(model="m", out_dir="o", prompts_per_round=2,
                  update=UpdateSettings(minibatch_size=64))
    with pytest.raises(ValueError, match=r"lr must be a number > 0, got -1"):
        UpdateSettings(lr=-1)


@pytest.mark.ray
@pytest.mark.slow
def test_train_lm_command_with_a_local_model(ray_local, tiny_model_dir, classifier_dir,
                                            tmp_path):
    """``iif-ray train-lm --model PATH --reward PATH --prompts FILE``: the user-facing path, on
    a policy and a reward classifier written with ``save_pretrained`` (nothing downloads)."""
    import json

    from iif_ray.cli import main
    from iif_ray.ledger import read_ledger
    from iif_ray.lm.prompts import PromptFile

    out = tmp_path / "run"
    prompts = tmp_path / "prompts.jsonl"  # real-toxicity-prompts' shape
    prompts.write_text("\n".join(json.dumps({"prompt": {"text": f"the river {w} and"}})
                                  for w in ("runs", "bends", "sleeps", "glows", "turns", "waits",
                                            "rises", "falls", "sings", "hides")))
    assert main(["train-lm", "--model", str(tiny_model_dir), "--rounds", "1",
                 "--prompts-per-round", "4", "--group-size", "2", "--minibatch-size", "4",
                 "--epochs", "1", "--lora-rank", "2", "--out", str(out),
                 "--reward", str(classifier_dir[0]), "--reward-label", "nothate",
                 "--prompts", str(prompts),
                 "--address", ray_local.get_runtime_context().gcs_address]) == 0
    # Every trained prompt came from the file's training split.
    ledger = read_ledger(str(out / "ledger")).to_pandas()
    assert set(ledger.prompt) <= set(PromptFile(prompts).splits["train"])
    progress = pd.read_csv(out / PROGRESS_CSV)
    assert progress["round"].tolist() == [1] and progress.rows_updated.item() in (4, 8)
    summary = json.loads((out / SUMMARY).read_text())
    assert summary["spec"]["model"] == str(tiny_model_dir) and summary["spec"]["algo"] == "iif"
    assert summary["spec"]["reward"] == str(classifier_dir[0])
    # The tiny classifier is untrained: its logits are small, unlike detox-mini's (about +5).
    assert abs(progress.reward_mean.item()) < 1.5


@pytest.mark.ray
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_learner_gives_the_cpu_learners_figures_and_a_gpu_run_trains(
        ray_local, tiny_model_dir, tmp_path):
    """Where a GPU exists: the learner on CUDA prepares and scores a batch as on CPU, and a
    run with every actor on the GPU (base weights in bfloat16) trains two rounds."""
    from iif_ray.lm import detox
    from iif_ray.lm.generation import SamplingSettings, sample_records
    from iif_ray.lm.models import load_policy
    from iif_ray.lm.workers import LearnerWorker

    threads = torch.get_num_threads()
    try:  # the actor body sets one thread: give this process its count back
        cpu = LearnerWorker(_spec(tiny_model_dir, tmp_path / "c"))
        gpu = LearnerWorker(_spec(tiny_model_dir, tmp_path / "g", learner_gpus=1))
    finally:
        torch.set_num_threads(threads)
    _, tokenizer = load_policy(str(tiny_model_dir))
    batch = sample_records(cpu.learner.policy.model, tokenizer,
                           detox.Language.build(0).prompts(6, split="train"),
                           SamplingSettings(), seed=0)
    for a, b in zip(cpu.prepare(batch), gpu.prepare(batch), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    weights = batch.response_mask.float() / 6
    torch.testing.assert_close(gpu.target(batch, weights), cpu.target(batch, weights),
                               rtol=1e-3, atol=1e-6)

    spec = _spec(tiny_model_dir, tmp_path / "run", num_scorers=1, cpus_per_scorer=0,
                 rollout_gpus=0.25, learner_gpus=0.5, gpus_per_scorer=0.25, dtype="bfloat16")
    fit(spec, echo=lambda _: None)
    progress = pd.read_csv(tmp_path / "run" / PROGRESS_CSV)
    assert progress["round"].tolist() == [1, 2] and (progress.scoring_s > 0).all()


@pytest.mark.ray
def test_actors_the_cluster_cannot_place_fail_with_the_reason(ray_local, tmp_path):
    """A GPU learner on a machine without GPUs: a clear error in bounded time, not a hang."""
    import ray

    from iif_ray.lm.workers import wait_started

    @ray.remote(num_gpus=1)
    class Stuck:
        pass

    spec = LMRunSpec(model="m", out_dir=str(tmp_path), learner_gpus=1)
    with pytest.raises(RuntimeError, match=r"the learner actor\(s\) did not start within 2 s"):
        wait_started({"learner": Stuck.remote()}, spec, timeout_s=2)


def test_resume_takes_new_placement_and_checks_it_before_ray(tmp_path, capsys,
                                                             tiny_model_dir):
    """A run saved with a GPU learner, resumed on this CPU machine: refused at once (exit 2,
    before Ray) unless the placement is changed, which --resume accepts. (Its model is a
    real directory: validation checks the stored model too.)"""
    import argparse

    from iif_ray.cli import build_parser, main
    from iif_ray.cli.train_lm import TrainLMCommand, resume_spec
    from iif_ray.run import LM, write_run_spec

    run = tmp_path / "run"
    model = str(tiny_model_dir)
    write_run_spec(run, LMRunSpec(model=model, out_dir=str(run), learner_gpus=1).to_dict(), LM)
    if not torch.cuda.is_available():
        assert main(["train-lm", "--resume", str(run)]) == 2
        err = capsys.readouterr().err
        assert "ask for 1 GPU(s); this machine has 0" in err and "--num-gpus-per-* 0" in err
    args = build_parser().parse_args(["train-lm", "--resume", str(run),
                                      "--num-gpus-per-learner", "0", "--scorer-timeout", "60"])
    assert isinstance(args, argparse.Namespace)
    TrainLMCommand().validate(args)  # no GPU asked for any more
    spec = resume_spec(args)
    assert (spec.learner_gpus, spec.scorer_timeout_s, spec.model) == (0.0, 60.0, model)
    # Flags not given keep the run's own values.
    args = build_parser().parse_args(["train-lm", "--resume", str(run)])
    assert resume_spec(args).learner_gpus == 1


def test_spec_selection_defaults_to_each_algos_rule_and_old_specs_load():
    from iif_ray.attribution.selection import SELECTION_RULES

    assert LMRunSpec(model="m", out_dir="o").selection_rule == "neg-bottom"
    assert LMRunSpec(model="m", out_dir="o", algo="random").selection_rule == "random"
    assert LMRunSpec(model="m", out_dir="o", selection="negative").selection_rule == "negative"
    for rule in SELECTION_RULES:
        LMRunSpec(model="m", out_dir="o", selection=rule)
    with pytest.raises(ValueError, match=r"selection must be one of .*, got 'worst'"):
        LMRunSpec(model="m", out_dir="o", selection="worst")
    with pytest.raises(ValueError, match="algo 'random' takes selection 'random'"):
        LMRunSpec(model="m", out_dir="o", algo="random", selection="neg-bottom")
    # A spec recorded before the field existed loads with the algo's own rule.
    old = LMRunSpec(model="m", out_dir="o", algo="random").to_dict()
    del old["selection"]
    assert LMRunSpec.from_dict(old).selection_rule == "random"


@pytest.mark.ray
@pytest.mark.slow
def test_selection_negative_drops_exactly_the_negative_records(ray_local, tiny_model_dir,
                                                              tmp_path):
    """The paper's official rule reaches the update: every negative-scored record dropped,
    every other one kept (minibatches of 1, so nothing is trimmed), whatever p is."""
    from iif_ray.ledger import read_ledger

    spec = _spec(tiny_model_dir, tmp_path, rounds=1, selection="negative", drop_fraction=0.1,
                 update={"minibatch_size": 1})
    fit(spec, echo=lambda _: None)
    ledger = read_ledger(str(tmp_path / "ledger")).to_pandas()
    assert (ledger.score < 0).any() and (ledger.score >= 0).any()
    assert (ledger.kept == (ledger.score >= 0)).all()
    progress = pd.read_csv(tmp_path / PROGRESS_CSV)
    assert progress.rows_updated.item() == (ledger.score >= 0).sum()


@pytest.mark.ray
@pytest.mark.slow
def test_a_legacy_lm_directory_resumes(ray_local, tiny_model_dir, tmp_path):
    """A run directory under the LM engine's old file names (``lm_run.json``,
    ``lm_progress.csv``, ``lm_checkpoint.pt``), killed after its checkpoint, resumes with
    ``train-lm --resume``: migrated to the run model's names, the same figures as a run
    never interrupted."""
    import json
    import os

    from iif_ray.cli import main
    from iif_ray.ledger import read_ledger
    from iif_ray.run import learner_state_path

    kw = dict(rounds=2, checkpoint_every=1, eval_every=2, algo="random")
    straight = _spec(tiny_model_dir, tmp_path / "straight", **kw)
    fit(straight, echo=lambda _: None)

    def kill_in_round_2(row: dict) -> None:  # written, not yet checkpointed
        if row["round"] == 2:
            raise _Killed

    run = tmp_path / "legacy"
    with pytest.raises(_Killed):
        fit(_spec(tiny_model_dir, run, **kw), echo=lambda _: None, on_round=kill_in_round_2)
    assert pd.read_csv(run / PROGRESS_CSV)["round"].tolist() == [1, 2]
    # Written as the LM engine wrote it before the run model: its old names, no kind.
    spec = json.loads((run / "run.json").read_text())
    del spec["kind"], spec["selection"]
    (run / "lm_run.json").write_text(json.dumps(spec))
    (run / "run.json").unlink()
    os.replace(run / "progress.csv", run / "lm_progress.csv")
    os.replace(learner_state_path(run), run / "lm_checkpoint.pt")
    learner_state_path(run).parent.rmdir()
    assert main(["train-lm", "--resume", str(run),
                 "--address", ray_local.get_runtime_context().gcs_address]) == 0
    assert not list(run.glob("lm_*"))
    assert json.loads((run / "run.json").read_text())["kind"] == "lm"
    assert learner_state_path(run).is_file() and (run / SUMMARY).is_file()
    a = pd.read_csv(tmp_path / "straight" / PROGRESS_CSV)
    b = pd.read_csv(run / PROGRESS_CSV)
    assert b["round"].tolist() == [1, 2]
    figures = ["reward_mean", "kl", "kl_beta", "frac_dropped", "rows_updated", "eval_reward"]
    pd.testing.assert_frame_equal(a[figures], b[figures])
    pd.testing.assert_frame_equal(read_ledger(str(tmp_path / "straight" / "ledger")).to_pandas(),
                                  read_ledger(str(run / "ledger")).to_pandas())
