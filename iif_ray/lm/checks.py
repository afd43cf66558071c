"""Two checks of LM influence scores that do not depend on noisy learning curves.

* **Flipped rewards** (:func:`flipped_reward_auroc`): in one round, the rewards of a random 10%
  of the records are corrupted (their label flipped: ``P -> 1 - P``, which negates a
  log-odds reward such as detox-mini's) before
  advantages are computed; the target still sees true rewards. The check asks how well
  ``-score`` ranks the corrupted records first: the AUROC (0.5 is chance) and the precision
  among the ``k`` lowest scores (``k`` = the number of corrupted records). Not every flip
  harms: a response whose true reward is already below the baseline and whose flipped one
  is further below is pushed down either way. The **clean** variant counts as positives only
  the *harmful* flips (:func:`~iif_ray.evaluation.flips.harmful_flips`: the record's
  last-token advantage under the flipped reward is non-zero and of another sign than under
  the true one, so the update pushes the response's likelihood where its true reward does
  not), leaves the harmless flips out of both classes, and ranks them
  against the uncorrupted records. The definition uses rewards and advantages only, not
  gradients, so the check does not grade the score against itself.
* **Single-round intervention** (:func:`intervention`): from the same weights and batch, one
  update on every record, one without the records of negative score, and one without as many
  random records; each updated policy is then measured on the same held-out prompts with the
  same sampling seed (common random numbers), by the reward classifier and the held-out
  detector. The paper's version of this experiment compares the same three arms.

Both run on detox-mini (above) or on arith (:mod:`iif_ray.lm.arith`, ``task="arith"``:
:func:`prepare_round`), whose reward is an exact 0/1 checker's: the round is GRPO's (prompt
groups, group-relative advantages, the task's update settings, :data:`~iif_ray.lm.spec.
TASK_DEFAULTS`), a flip is ``1 <-> 0`` (:func:`iif_ray.lm.arith.flip`), a harmful flip one that
reverses the sign of the record's group-relative advantage, and the intervention's held-out
measure is exact: the updated policy's mean probability of the exact answer on the held-out
problems (teacher-forced) and its greedy exact accuracy, so the arms differ only by the update.

Both run in-process (no Ray) on a policy from a local directory.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from iif_ray.attribution.sequence import SequenceBatch
from iif_ray.evaluation.flips import auroc, harmful_flips, precision_at_k
from iif_ray.lm import LM_TASKS, arith, detox
from iif_ray.lm.advantages import advantages, last_token_advantage, validation_weights
from iif_ray.lm.generation import (
    SamplingSettings,
    answer_probability,
    response_texts,
    sample_records,
)
from iif_ray.lm.learner import (
    LMLearner,
    LMPolicy,
    UpdateSettings,
    ValueTargets,
    trim_to_minibatches,
)
from iif_ray.lm.models import load_policy, with_lora
from iif_ray.lm.spec import TASK_DEFAULTS, LMRunSpec, task_spec


@dataclass
class Round:
    """One round's material at fixed weights: batch, true rewards, validation target."""

    learner: LMLearner
    tokenizer: object
    batch: SequenceBatch
    rewards: torch.Tensor
    validation: SequenceBatch
    weights: torch.Tensor
    spec: LMRunSpec
    validation_rewards: torch.Tensor
    # The records' prompts, one per record (arith: each problem repeated over its group).
    prompts: list[str]


def prepare_round(model_dir: str, seed: int, *, sequences: int = 256, validation: int = 64,
                  update: UpdateSettings | dict[str, Any] | None = None, task: str = "detox",
                  group_size: int | None = None) -> Round:
    """Sample a round's records and a validation set from the policy in ``model_dir``.

    ``task="arith"``: ``sequences / group_size`` training problems (the task's group size
    by default), each answered ``group_size`` times, rewarded by the exact checker, under
    the task's spec (:func:`~iif_ray.lm.spec.task_spec`: GRPO, its learning rate and
    epochs). ``update``: the update's settings, or a dict of fields over the task's.
    """
    if task == "arith":
        return _arith_round(model_dir, seed, sequences=sequences, validation=validation,
                            update=update, group_size=group_size)
    if task != "detox":
        raise ValueError(f"unknown task {task!r}; accepted: {', '.join(LM_TASKS)}")
    update = UpdateSettings(**update) if isinstance(update, dict) else update or UpdateSettings()
    lang = detox.Language.build(0)
    spec = LMRunSpec(model=model_dir, out_dir="-", group_size=1, update=update)
    return _sample_round(spec, seed, lang.prompts(sequences, split="train", seed=100 + seed),
                         lang.prompts(validation, split="train", seed=200 + seed),
                         detox_rewards)


def _arith_round(model_dir: str, seed: int, *, sequences: int, validation: int,
                 update: UpdateSettings | dict[str, Any] | None, group_size: int | None
                 ) -> Round:
    """arith's round: prompt groups, exact rewards, the task's spec (GRPO)."""
    group = group_size or TASK_DEFAULTS["arith"]["group_size"]
    if group < 2 or sequences % group:
        raise ValueError(f"arith's round needs whole groups of >= 2 responses: {sequences} "
                         f"sequences in groups of {group}")
    spec = task_spec("arith", model_dir, "-", prompts_per_round=sequences // group,
                     group_size=group, validation_prompts=validation,
                     update=update if isinstance(update, dict) else None)
    if isinstance(update, UpdateSettings):
        spec = replace(spec, update=update)
    problems = arith.Problems()
    grouped = [p for p in problems.prompts(sequences // group, split="train", seed=100 + seed)
               for _ in range(group)]
    return _sample_round(spec, seed, grouped,
                         problems.prompts(validation, split="train", seed=200 + seed),
                         exact_rewards)


def _sample_round(spec: LMRunSpec, seed: int, prompts: list[str], validation: list[str],
                  reward: Callable[[Any, SequenceBatch, list[str]], torch.Tensor]) -> Round:
    """The policy in ``spec.model`` with fresh LoRA adapters, one sampled response per
    prompt of ``prompts`` (the records) and of ``validation`` (the target's), rewarded."""
    torch.manual_seed(seed)
    model, tok = load_policy(spec.model)
    policy = LMPolicy(with_lora(model, rank=spec.lora_rank,
                                target_modules=list(spec.lora_targets)))
    learner = LMLearner(policy, spec.update, seed=seed)
    batch = sample_records(policy.model, tok, prompts, spec.sampling, seed)
    rewards = reward(tok, batch, prompts)
    vbatch = sample_records(policy.model, tok, validation, spec.sampling, seed + 1)
    vrewards = reward(tok, vbatch, validation)
    weights = validation_weights(spec, vbatch, vrewards, learner.prepare(vbatch), 0.05)
    return Round(learner, tok, batch, rewards, vbatch, weights, spec, vrewards, prompts)


def detox_rewards(tokenizer: Any, batch: SequenceBatch, prompts: list[str]) -> torch.Tensor:
    """detox-mini's reward (log-odds) on the records' responses (it reads no prompt)."""
    return torch.as_tensor(detox.reward(response_texts(tokenizer, batch)), dtype=torch.float32)


def exact_rewards(tokenizer: Any, batch: SequenceBatch, prompts: list[str]) -> torch.Tensor:
    """arith's checker on the records' responses, decoded with their special tokens (as the
    rollout worker decodes them for arith: ``"1<pad>2<eos>"`` is not ``"12<eos>"``)."""
    texts = response_texts(tokenizer, batch, skip_special_tokens=False)
    return torch.as_tensor(arith.reward(prompts, texts), dtype=torch.float32)


def with_validation(r: Round, v: int) -> Round:
    """``r`` with its target built from its first ``v`` validation responses only (the
    intervention at several target sizes from one sample)."""
    if v >= len(r.validation_rewards):
        return r
    val = r.validation.select(list(range(v)))
    rewards = r.validation_rewards[:v]
    weights = validation_weights(r.spec, val, rewards, r.learner.prepare(val), 0.05)
    return replace(r, validation=val, weights=weights, validation_rewards=rewards)


@dataclass
class Flips:
    """A round's rewards with some flipped, and the advantages the learner then sees."""

    flipped: np.ndarray  # [n] bool: the corrupted records
    harmful: np.ndarray  # [n] bool: those whose flip reverses their advantage's sign
    rewards: torch.Tensor  # the rewards as the learner sees them
    batch: SequenceBatch  # the round's records with those rewards' advantages


def flip_rewards(r: Round, *, fraction: float = 0.1, seed: int = 0) -> Flips:
    """Flip ``max(1, round(fraction * n))`` of the round's rewards, chosen by ``seed``: a
    detox-mini reward (log-odds) is negated, an arith reward flipped ``1 <-> 0``; the
    advantages (the round's estimator: PPO's last-token advantage for detox-mini, GRPO's
    group-relative one for arith) are computed from the corrupted rewards, and a flip is
    harmful where it reverses the sign of the record's advantage."""
    g = np.random.default_rng(seed)
    n = len(r.rewards)
    flipped = np.zeros(n, dtype=bool)
    flipped[g.choice(n, max(1, round(fraction * n)), replace=False)] = True
    if r.spec.task == "arith":
        corrupted = torch.as_tensor(arith.flip(r.rewards.numpy().astype(np.float64), flipped),
                                    dtype=r.rewards.dtype)
    else:
        corrupted = r.rewards.clone()
        corrupted[flipped] = -corrupted[flipped]
    prepared = r.learner.prepare(r.batch)
    full, _, _ = advantages(r.spec, r.batch, corrupted, prepared, 0.05)
    true, _, _ = advantages(r.spec, r.batch, r.rewards, prepared, 0.05)
    harmful = harmful_flips(flipped, last_token_advantage(true).numpy(),
                            last_token_advantage(full).numpy())
    return Flips(flipped, harmful, corrupted, full)


def flipped_reward_auroc(r: Round, *, fraction: float = 0.1, seed: int = 0,
                         method: str = "ghost") -> dict[str, float]:
    """AUROC of ``-score`` for finding the records whose reward was flipped."""
    flips = flip_rewards(r, fraction=fraction, seed=seed)
    flipped, harmful = flips.flipped, flips.harmful
    scores = r.learner.scores(flips.batch, r.validation, r.weights, method).numpy()
    clean = ~flipped | harmful  # the harmless flips belong to neither class
    both = harmful.any() and (~flipped).any()
    return {"auroc": auroc(flipped, -scores),
            "precision_at_k": precision_at_k(flipped, scores, int(flipped.sum())),
            "clean_flips": int(harmful.sum()), "flips": int(flipped.sum()),
            "clean_auroc": auroc(harmful[clean], -scores[clean]) if both else float("nan"),
            "clean_precision_at_k": precision_at_k(harmful[clean], scores[clean],
                                                   int(harmful.sum())),
            "flipped_negative": float((scores[flipped] < 0).mean()),
            "others_negative": float((scores[~flipped] < 0).mean())}


def intervention_arms(r: Round, *, seed: int = 0, method: str = "ghost"
                      ) -> tuple[SequenceBatch, ValueTargets | None, dict[str, torch.Tensor]]:
    """The round's advantages and the three arms' kept records (before trimming to whole
    minibatches): all, the non-negative-score ones, and as many random ones."""
    full, targets, _ = advantages(r.spec, r.batch, r.rewards, r.learner.prepare(r.batch), 0.05)
    scores = r.learner.scores(full, r.validation, r.weights, method)
    n = len(scores)
    negative = torch.nonzero(scores < 0).ravel()
    g = torch.Generator().manual_seed(seed)
    arms = {
        "all": torch.arange(n),
        "drop-negative": torch.nonzero(scores >= 0).ravel(),
        "drop-random": torch.randperm(n, generator=g)[len(negative):].sort().values,
    }
    return full, targets, arms


def intervention(r: Round, *, seed: int = 0, eval_prompts: int | None = None,
                 method: str = "ghost") -> dict[str, dict[str, float]]:
    """One update on all records, without the negative-score ones, and without as many
    random ones; each measured on the same held-out prompts (:func:`held_out`).

    ``eval_prompts``: detox-mini's sampled held-out prompts (default 256), arith's held-out
    problems (default all :data:`~iif_ray.lm.arith.HELD_OUT`)."""
    full, targets, arms = intervention_arms(r, seed=seed, method=method)
    out = {}
    for arm, kept in arms.items():
        learner = copy.deepcopy(r.learner)
        kept = trim_to_minibatches(kept, learner.settings.minibatch_size,
                                   torch.Generator().manual_seed(seed))
        learner.update(full, kept, targets)
        out[arm] = {"kept": len(kept), **held_out(r, learner, eval_prompts)}
    return out


def held_out(r: Round, learner: LMLearner, eval_prompts: int | None = None
             ) -> dict[str, float]:
    """The updated policy on held-out prompts. detox-mini: responses sampled with one seed
    (common random numbers), read by the reward and the held-out detector. arith (no
    sampling noise): ``reward``, the mean probability of the exact answer (teacher-forced,
    the expected reward), and ``greedy``, the share of exact greedy answers."""
    model, tok = learner.policy.model, r.tokenizer
    if r.spec.task == "arith":
        prompts = arith.Problems().prompts(eval_prompts or arith.HELD_OUT, split="eval")
        exact = answer_probability(model, tok, prompts, [arith.answer(p) for p in prompts])
        greedy = sample_records(model, tok, prompts, r.spec.sampling, seed=1234, greedy=True)
        return {"reward": float(np.mean(exact)),
                "greedy": float(exact_rewards(tok, greedy, prompts).mean())}
    prompts = detox.Language.build(0).prompts(eval_prompts or 256, split="eval", seed=7)
    texts = response_texts(tok, sample_records(model, tok, prompts, SamplingSettings(),
                                               seed=1234))
    return {"reward": float(np.mean(detox.reward(texts))), **detox.toxicity(texts)}


def run_checks(model_dir: str, seeds: int = 5, echo: Callable[[str], None] = print,
               sequences: int = 256, validation: Sequence[int] = (64, 256, 1024), *,
               task: str = "detox", group_size: int | None = None,
               update: dict[str, Any] | None = None) -> dict[str, list]:
    """Both checks over ``seeds`` rounds (different samples from the same policy).

    The flip check's target is built from the largest of ``validation`` (responses); the
    intervention runs once per size, each target from the first that many responses of the
    same sample (the paper uses 1,024; two independent 64-response targets have cosine
    0.05-0.07 on detox-mini, mostly noise). ``intervention`` holds, per seed, the arms per
    size (its keys are the sizes as text, as JSON writes them). ``task``, ``group_size``
    and ``update`` (fields over the task's update settings): as :func:`prepare_round`.
    """
    sizes = sorted(set(validation))
    results: dict[str, list] = {"flip": [], "intervention": []}
    for s in range(seeds):
        r = prepare_round(model_dir, s, sequences=sequences, validation=sizes[-1],
                          task=task, group_size=group_size, update=update)
        flip = flipped_reward_auroc(r, seed=s)
        results["flip"].append(flip)
        echo(f"seed {s}: flipped-reward AUROC {flip['auroc']:.3f}, precision@k "
             f"{flip['precision_at_k']:.2f}; clean flips ({flip['clean_flips']} of "
             f"{flip['flips']}) AUROC {flip['clean_auroc']:.3f}, precision@k "
             f"{flip['clean_precision_at_k']:.2f} (negative scores: flipped "
             f"{flip['flipped_negative']:.2f}, others {flip['others_negative']:.2f})")
        by_size = {}
        for v in sizes:
            arms = intervention(with_validation(r, v), seed=s,
                                eval_prompts=None if task == "arith" else min(256, 4 * sequences))
            by_size[str(v)] = arms
            echo(f"seed {s}, V={v}: " + arms_line(task, arms))
        results["intervention"].append(by_size)
    return results


def arms_line(task: str, arms: dict[str, dict[str, float]]) -> str:
    """The intervention's arms at one size, as one line."""
    if task == "arith":
        return "held-out exact-answer probability after one update: " + ", ".join(
            f"{a} {x['reward']:.4f} (greedy {x['greedy']:.3f}, kept {x['kept']})"
            for a, x in arms.items())
    return "held-out reward after one update: " + ", ".join(
        f"{a} {x['reward']:.4f} (toxic {x['toxic_rate']:.3f}, kept {x['kept']})"
        for a, x in arms.items())
