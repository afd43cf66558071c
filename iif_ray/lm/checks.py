"""Two checks of LM influence scores that do not depend on noisy learning curves.

* **Flipped rewards** (:func:`flipped_reward_auroc`): in one round, the rewards of a random 10%
  of the records are corrupted (their label flipped: ``P -> 1 - P``, which negates a
  log-odds reward such as detox-mini's) before
  advantages are computed; the target still sees true rewards. The check asks how well
  ``-score`` ranks the corrupted records first: the AUROC (0.5 is chance) and the precision
  among the ``k`` lowest scores (``k`` = the number of corrupted records). Not every flip
  harms: a response whose true reward is already below the baseline and whose flipped one
  is further below is pushed down either way. The **clean** variant counts as positives only
  the *harmful* flips (:func:`harmful_flips`: the flip reverses the sign of the record's
  last-token advantage, so the update pushes the response's likelihood the other way than
  its true reward says), leaves the harmless flips out of both classes, and ranks them
  against the uncorrupted records. The definition uses rewards and advantages only, not
  gradients, so the check does not grade the score against itself.
* **Single-round intervention** (:func:`intervention`): from the same weights and batch, one
  update on every record, one without the records of negative score, and one without as many
  random records; each updated policy is then measured on the same held-out prompts with the
  same sampling seed (common random numbers), by the reward classifier and the held-out
  detector. The paper's version of this experiment compares the same three arms.

Both run in-process (no Ray) on a policy from a local directory.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from iif_ray.attribution.sequence import SequenceBatch
from iif_ray.lm import detox
from iif_ray.lm.advantages import advantages, last_token_advantage, validation_weights
from iif_ray.lm.generation import SamplingSettings, response_texts, sample_records
from iif_ray.lm.learner import LMLearner, LMPolicy, UpdateSettings, trim_to_minibatches
from iif_ray.lm.models import load_policy, with_lora
from iif_ray.lm.spec import LMRunSpec


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


def prepare_round(model_dir: str, seed: int, *, sequences: int = 256, validation: int = 64,
                  update: UpdateSettings | None = None) -> Round:
    """Sample a round's records and a validation set from the policy in ``model_dir``."""
    update = update or UpdateSettings()
    torch.manual_seed(seed)
    model, tok = load_policy(model_dir)
    policy = LMPolicy(with_lora(model, rank=8, target_modules=["q_proj", "v_proj"]))
    learner = LMLearner(policy, update, seed=seed)
    lang = detox.Language.build(0)
    sampling = SamplingSettings()
    batch = sample_records(policy.model, tok, lang.prompts(sequences, split="train",
                                                           seed=100 + seed), sampling, seed)
    rewards = torch.as_tensor(detox.reward(response_texts(tok, batch)), dtype=torch.float32)
    vbatch = sample_records(policy.model, tok, lang.prompts(validation, split="train",
                                                            seed=200 + seed), sampling, seed + 1)
    vrewards = torch.as_tensor(detox.reward(response_texts(tok, vbatch)), dtype=torch.float32)
    spec = LMRunSpec(model=model_dir, out_dir="-", group_size=1, update=update)
    weights = validation_weights(spec, vbatch, vrewards, learner.prepare(vbatch), 0.05)
    return Round(learner, tok, batch, rewards, vbatch, weights, spec, vrewards)


def with_validation(r: Round, v: int) -> Round:
    """``r`` with its target built from its first ``v`` validation responses only (the
    intervention at several target sizes from one sample)."""
    if v >= len(r.validation_rewards):
        return r
    val = r.validation.select(list(range(v)))
    rewards = r.validation_rewards[:v]
    weights = validation_weights(r.spec, val, rewards, r.learner.prepare(val), 0.05)
    return replace(r, validation=val, weights=weights, validation_rewards=rewards)


def harmful_flips(flipped: np.ndarray, true_advantage: np.ndarray,
                  flipped_advantage: np.ndarray) -> np.ndarray:
    """The corrupted records whose flip reverses the sign of their last-token advantage:
    the update then pushes their response the other way than the true reward says."""
    return flipped & (np.sign(true_advantage) != np.sign(flipped_advantage))


def precision_at_k(positive: np.ndarray, scores: np.ndarray, k: int) -> float:
    """The share of positives among the ``k`` lowest scores (ties: record order)."""
    if k < 1:
        return float("nan")
    return float(positive[np.argsort(scores, kind="stable")[:k]].mean())


def flipped_reward_auroc(r: Round, *, fraction: float = 0.1, seed: int = 0,
                         method: str = "ghost") -> dict[str, float]:
    """AUROC of ``-score`` for finding the records whose reward was flipped."""
    from sklearn.metrics import roc_auc_score

    g = np.random.default_rng(seed)
    n = len(r.rewards)
    flipped = np.zeros(n, dtype=bool)
    flipped[g.choice(n, max(1, round(fraction * n)), replace=False)] = True
    corrupted = r.rewards.clone()
    corrupted[flipped] = -corrupted[flipped]
    prepared = r.learner.prepare(r.batch)
    full, _, _ = advantages(r.spec, r.batch, corrupted, prepared, 0.05)
    true, _, _ = advantages(r.spec, r.batch, r.rewards, prepared, 0.05)
    scores = r.learner.scores(full, r.validation, r.weights, method).numpy()
    harmful = harmful_flips(flipped, last_token_advantage(true).numpy(),
                            last_token_advantage(full).numpy())
    clean = ~flipped | harmful  # the harmless flips belong to neither class
    both = harmful.any() and (~flipped).any()
    return {"auroc": float(roc_auc_score(flipped, -scores)),
            "precision_at_k": precision_at_k(flipped, scores, int(flipped.sum())),
            "clean_flips": int(harmful.sum()), "flips": int(flipped.sum()),
            "clean_auroc": float(roc_auc_score(harmful[clean], -scores[clean]))
            if both else float("nan"),
            "clean_precision_at_k": precision_at_k(harmful[clean], scores[clean],
                                                   int(harmful.sum())),
            "flipped_negative": float((scores[flipped] < 0).mean()),
            "others_negative": float((scores[~flipped] < 0).mean())}


def intervention(r: Round, *, seed: int = 0, eval_prompts: int = 256,
                 method: str = "ghost") -> dict[str, dict[str, float]]:
    """One update on all records, without the negative-score ones, and without as many
    random ones; each measured on the same held-out prompts and sampling seed."""
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
    lang = detox.Language.build(0)
    prompts = lang.prompts(eval_prompts, split="eval", seed=7)
    out = {}
    for arm, kept in arms.items():
        learner = copy.deepcopy(r.learner)
        kept = trim_to_minibatches(kept, learner.settings.minibatch_size,
                                   torch.Generator().manual_seed(seed))
        learner.update(full, kept, targets)
        texts = response_texts(r.tokenizer, sample_records(
            learner.policy.model, r.tokenizer, prompts, SamplingSettings(), seed=1234))
        out[arm] = {"kept": len(kept), "reward": float(np.mean(detox.reward(texts))),
                    **detox.toxicity(texts)}
    return out


def run_checks(model_dir: str, seeds: int = 5, echo: Callable[[str], None] = print,
               sequences: int = 256, validation: Sequence[int] = (64, 256, 1024)
               ) -> dict[str, list]:
    """Both checks over ``seeds`` rounds (different samples from the same policy).

    The flip check's target is built from the largest of ``validation`` (responses); the
    intervention runs once per size, each target from the first that many responses of the
    same sample (the paper uses 1,024; two independent 64-response targets have cosine
    0.05-0.07 on detox-mini, mostly noise). ``intervention`` holds, per seed, the arms per
    size (its keys are the sizes as text, as JSON writes them).
    """
    sizes = sorted(set(validation))
    results: dict[str, list] = {"flip": [], "intervention": []}
    for s in range(seeds):
        r = prepare_round(model_dir, s, sequences=sequences, validation=sizes[-1])
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
                                eval_prompts=min(256, 4 * sequences))
            by_size[str(v)] = arms
            echo(f"seed {s}, V={v}: held-out reward after one update: " + ", ".join(
                f"{a} {x['reward']:.4f} (toxic {x['toxic_rate']:.3f}, kept {x['kept']})"
                for a, x in arms.items()))
        results["intervention"].append(by_size)
    return results
