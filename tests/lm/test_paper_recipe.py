"""The paper's RLHF recipe as a preset, and the group filter (DAPO's dynamic sampling)."""

from __future__ import annotations

import copy

import pytest
import torch

from iif_ray.attribution.sequence import SequenceBatch
from iif_ray.cli import build_parser, main
from iif_ray.cli.train_lm import spec_from_flags
from iif_ray.lm.advantages import grpo_advantages, varied_groups
from iif_ray.lm.learner import LMLearner, LMPolicy, UpdateSettings
from iif_ray.lm.models import tiny_llama, with_lora
from iif_ray.lm.spec import LMRunSpec


def _spec(*argv: str) -> LMRunSpec:
    args = build_parser().parse_args(["train-lm", "--out", "o", *argv])
    return spec_from_flags(args, model="m", out_dir="o")


def test_paper_preset_sets_the_papers_values_and_flags_override_them():
    spec = _spec("--preset", "paper-rlhf")
    u = spec.update
    assert (u.estimator, u.minibatch_size, u.epochs, u.lr) == ("ppo", 1, 4, 1e-5)
    assert (u.clip, u.vf_coef, u.vf_clip, u.max_grad_norm) == (0.2, 0.1, 0.2, 0.0)
    assert (spec.kl_beta, spec.kl_target, spec.kl_per) == (0.04, 6.0, "sequence")
    assert (spec.validation_prompts, spec.validation) == (1024, "reference")
    assert spec.target_whiten_chunk == 64
    assert (spec.prompts_per_round, spec.group_size) == (256, 1)
    assert spec.selection_rule == "negative" and spec.preset == "paper-rlhf"
    # Explicit flags win, nested ones too; the rest stays the preset's.
    spec = _spec("--preset", "paper-rlhf", "--lr", "1e-4", "--validation-prompts", "256",
                 "--selection", "neg-bottom", "--kl-per", "token")
    assert (spec.update.lr, spec.update.minibatch_size) == (1e-4, 1)
    assert (spec.validation_prompts, spec.selection_rule, spec.kl_per) == (256, "neg-bottom",
                                                                          "token")
    # Each algo gets its own rule: ppo none, the random control as many as 'negative'.
    assert _spec("--preset", "paper-rlhf", "--algo", "ppo").selection is None
    assert _spec("--preset", "paper-rlhf", "--algo", "random").selection_rule == "neg-random"
    # Without the preset nothing changes.
    assert _spec() == LMRunSpec(model="m", out_dir="o")


@pytest.mark.parametrize(("argv", "message"), [
    (["--preset", "paper-rlhf", "--algo", "group-filter"],
     "algo 'group-filter' drops prompt groups whose rewards do not vary: it needs "
     "group_size >= 2, got 1"),
    (["--algo", "group-filter", "--selection", "negative"],
     "algo 'group-filter' does not filter by score: it takes no selection rule"),
    (["--preset", "nope"], "invalid choice: 'nope'"),
    (["--validation", "nope"], "invalid choice: 'nope'"),
])
def test_bad_preset_combinations_are_refused_in_one_line(tmp_path, capsys, argv, message):
    assert main(["train-lm", "--out", str(tmp_path / "run"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_a_resumed_run_refuses_a_preset(tmp_path, capsys):
    assert main(["train-lm", "--resume", str(tmp_path), "--preset", "paper-rlhf"]) == 2
    assert "--preset paper-rlhf sets up a new run" in capsys.readouterr().err


def test_group_filter_drops_exactly_the_groups_whose_rewards_do_not_vary():
    rewards = torch.tensor([1.0, 1.0, 1.0,   # constant: dropped
                            0.0, 1.0, 0.0,   # varies
                            -2.0, -2.0, -2.0,  # constant: dropped
                            5.0, 5.0, 5.0 + 1e-6])  # varies, barely
    keep = varied_groups(rewards, 3)
    assert keep.tolist() == [False] * 3 + [True] * 3 + [False] * 3 + [True] * 3
    assert varied_groups(torch.ones(4), 2).sum() == 0
    with pytest.raises(ValueError, match="group_size must divide the batch of 5"):
        varied_groups(torch.ones(5), 2)


def test_group_filter_update_means_over_the_kept_records_only():
    """After the group filter, one update step equals the hand-written GRPO loss whose token
    mean runs over the kept groups' tokens only, and differs from one whose denominator still
    counts the dropped groups (masking instead of removing)."""
    g = torch.Generator().manual_seed(0)
    n, width, vocab = 8, 7, 40
    ids = torch.randint(3, vocab, (n, width), generator=g)
    mask = torch.zeros(n, width)
    for i in range(n):
        mask[i, 2:width - i % 3] = 1
    base = LMPolicy(with_lora(tiny_llama(vocab, hidden=32, intermediate=64, layers=2),
                              rank=4, target_modules=["q_proj", "v_proj"]))
    batch = SequenceBatch(ids, torch.ones(n, width, dtype=torch.long), mask)
    rewards = torch.tensor([1.0, 1.0, 0.0, 2.0, 3.0, 3.0, 0.5, -1.0])  # groups of 2
    kept = torch.nonzero(varied_groups(rewards, 2)).ravel()
    assert kept.tolist() == [2, 3, 6, 7]
    settings = UpdateSettings(estimator="grpo", aggregation="token-mean", epochs=1,
                              minibatch_size=4, lr=0.05, max_grad_norm=0)
    old, ref, _ = LMLearner(base, settings).prepare(batch)
    full = SequenceBatch(ids, batch.attention_mask, mask, old_logp=old, ref_logp=ref,
                         advantages=grpo_advantages(rewards, mask, 2))
    learner = LMLearner(copy.deepcopy(base), settings, seed=0)
    metrics = learner.update(full, kept)

    manual = copy.deepcopy(base)
    sub = full.select(kept)
    logp, _ = manual.logp_and_values(sub)
    ratio = torch.exp(logp - sub.old_logp)
    a = sub.advantages
    summed = (-torch.minimum(ratio * a, ratio.clamp(0.8, 1.2) * a) * sub.response_mask).sum()
    kept_tokens, all_tokens = float(mask[kept].sum()), float(mask.sum())
    loss = summed / kept_tokens  # the kept groups' own token count
    opt = torch.optim.Adam([p for p in manual.parameters() if p.requires_grad], lr=0.05)
    loss.backward()
    opt.step()
    for (name, p), q in zip(learner.policy.named_parameters(), manual.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5, msg=name)
    # Adam's first step hardly depends on the loss's scale, so the denominator is checked on
    # the loss itself: the kept tokens', not the whole batch's (masking would give that).
    assert metrics["policy_loss"] == pytest.approx(loss.item(), rel=1e-5)
    assert abs(summed.item() / all_tokens - loss.item()) > 0.1 * abs(loss.item())


@pytest.mark.ray
@pytest.mark.slow
def test_group_filter_then_iif_on_ray(ray_local, tiny_model_dir, tmp_path):
    """group-filter+iif with the paper's fixed reference-policy target and per-sequence KL:
    the zero-variance groups leave the round unscored, IIF then drops every negative score
    of the rest, and ledger and progress say so."""
    import math

    import numpy as np
    import pandas as pd

    from iif_ray.ledger import read_ledger
    from iif_ray.lm.generation import SamplingSettings
    from iif_ray.lm.trainer import fit
    from iif_ray.run import PROGRESS

    # One near-greedy token per response: some groups answer alike (equal rewards).
    spec = LMRunSpec(model=str(tiny_model_dir), out_dir=str(tmp_path), rounds=2,
                     algo="group-filter+iif", selection="negative", prompts_per_round=12,
                     group_size=2, validation="reference", validation_prompts=6,
                     kl_per="sequence", kl_target=6.0, eval_every=2, eval_prompts=4,
                     lora_rank=2, update=UpdateSettings(epochs=1, minibatch_size=1),
                     sampling=SamplingSettings(max_new_tokens=1, temperature=0.05))
    fit(spec, echo=lambda _: None)
    ledger = read_ledger(str(tmp_path / "ledger")).to_pandas()
    progress = pd.read_csv(tmp_path / PROGRESS)
    spread = ledger.groupby(["iteration", "group"]).reward.transform(lambda r: r.max() - r.min())
    flat = (spread == 0).to_numpy()
    assert flat.any() and (~flat).any()  # the round has both kinds of group
    assert ledger.score[flat].isna().all() and not ledger.kept[flat].any()
    scored = ledger[~flat]
    assert np.isfinite(scored.score).all()
    assert (scored.kept == (scored.score >= 0)).all()  # minibatch 1: nothing trimmed
    by_round = ledger.assign(flat=flat).groupby("iteration")
    assert (by_round.flat.sum() // 2).tolist() == progress.groups_dropped.tolist()
    assert by_round.kept.sum().tolist() == progress.rows_updated.tolist()
    assert all(math.isfinite(v) for v in progress.kl_beta)


def test_a_sweeps_arms_get_each_algos_rule():
    """A sweep replaces the base spec's algo per arm: each arm gets a rule it accepts, the
    preset's when the spec came from one, and the random control stays IIF's control."""
    from iif_ray.experiments.options import SweepOptions

    paper = _spec("--preset", "paper-rlhf")
    assert {a: paper.with_algo(a).selection for a in ("ppo", "iif", "random")} == \
        {"ppo": None, "iif": "negative", "random": "neg-random"}
    plain = LMRunSpec(model="m", out_dir="o", selection="negative")
    assert plain.with_algo("random").selection_rule == "neg-random"
    assert plain.with_algo("random").with_algo("iif").selection_rule == "negative"
    assert plain.with_algo("group-filter").selection is None
    assert LMRunSpec(model="m", out_dir="o").with_algo("random").selection_rule == "random"
    SweepOptions(algos=["group-filter", "group-filter+iif", "iif"])
    with pytest.raises(ValueError, match="unknown algo 'dpo'"):
        SweepOptions(algos=["dpo"])
