"""The LM runtime on Ray Core, shaped like veRL's single-controller ``fit`` loop.

One driver, three kinds of actors::

    rollout actor(s)  --generate-->  records (prompt + response)
    reward actor      --score----->  one reward per record
    learner actor     --prepare--->  old / reference log-probs, values
    driver            --advantages over whole groups, BEFORE any row is dropped
    learner actor     --score----->  influence of every record (pre-update weights)
    driver            --select: drop rows (IIF, or the random control), trim to minibatches
    learner actor     --update---->  PPO / GRPO over the kept rows only

The rollout actors get the learner's adapter weights at the start of every round. Every round
appends one line to ``lm_progress.csv`` (rewards, KL, fraction dropped, seconds per stage);
evaluation rounds add the held-out detector's reading.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from iif_ray.attribution.selection import select
from iif_ray.attribution.sequence import SequenceBatch, target_weights
from iif_ray.lm import LM_ALGOS, detox
from iif_ray.lm.advantages import AdaptiveKL, gae, grpo_advantages, kl_penalised_rewards, whiten
from iif_ray.lm.generation import SamplingSettings, response_texts, sample_records
from iif_ray.lm.learner import (
    LMLearner,
    LMPolicy,
    UpdateSettings,
    ValueTargets,
    trim_to_minibatches,
)
from iif_ray.lm.models import load_policy, with_lora

PROGRESS_CSV = "lm_progress.csv"
PROGRESS_FIELDS = ("round", "reward_mean", "kl", "kl_beta", "frac_dropped", "rows_updated",
                   "generate_s", "reward_s", "prepare_s", "scoring_s", "update_s", "round_s",
                   "eval_toxic_rate", "eval_negativity", "eval_reward")


@dataclass(frozen=True)
class LMRunSpec:
    """One LM run. ``model``: a local Hugging Face causal-LM directory with its tokenizer."""

    model: str
    out_dir: str
    algo: str = "iif"
    rounds: int = 10
    prompts_per_round: int = 64
    group_size: int = 4
    validation_prompts: int = 64
    drop_fraction: float = 0.5
    target: str = "seq-return"
    scoring_method: str = "ghost"
    lora_rank: int = 8
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    update: UpdateSettings = field(default_factory=UpdateSettings)
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    kl_beta: float = 0.05
    kl_target: float = 1.0
    eval_every: int = 5
    eval_prompts: int = 128
    seed: int = 0
    reward: str | None = None  # a local classifier directory; None: detox-mini's classifier
    reward_label: str | None = None

    def __post_init__(self) -> None:
        if self.algo not in LM_ALGOS:
            raise ValueError(f"unknown algo {self.algo!r}; accepted: {list(LM_ALGOS)}")
        if self.rounds < 1 or self.prompts_per_round < 1 or self.group_size < 1:
            raise ValueError("rounds, prompts_per_round and group_size must be >= 1")
        if not 0 <= self.drop_fraction < 1:
            raise ValueError(f"drop_fraction must be in [0, 1), got {self.drop_fraction}")
        if self.update.estimator == "grpo" and self.group_size < 2:
            raise ValueError("grpo needs group_size >= 2 (advantages are group-relative)")


def _policy_model(spec: LMRunSpec) -> tuple[Any, Any]:
    model, tokenizer = load_policy(spec.model)
    return with_lora(model, rank=spec.lora_rank, target_modules=list(spec.lora_targets)), \
        tokenizer


class RolloutWorker:
    """Actor body: generates responses with Hugging Face ``generate`` (CPU or GPU)."""

    def __init__(self, spec: LMRunSpec) -> None:
        torch.set_num_threads(1)
        self.spec = spec
        self.model, self.tokenizer = _policy_model(spec)
        self.model.eval()

    def set_weights(self, weights: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(weights, strict=False)

    def generate(self, prompts: list[str], seed: int) -> tuple[SequenceBatch, list[str]]:
        batch = sample_records(self.model, self.tokenizer, prompts, self.spec.sampling, seed)
        return batch, response_texts(self.tokenizer, batch)


class RewardWorker:
    """Actor body: the reward (detox-mini's classifier, or ``spec.reward``'s local one) and
    the held-out detector (VADER, whatever the reward)."""

    def __init__(self, spec: LMRunSpec) -> None:
        torch.set_num_threads(1)
        self._reward = detox.reward
        if spec.reward:
            from iif_ray.lm.rewards import ClassifierReward

            self._reward = ClassifierReward(spec.reward, spec.reward_label)

    def score(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self._reward(texts), dtype=np.float32)

    def evaluate(self, texts: list[str]) -> dict[str, float]:
        return {**detox.toxicity(texts), "reward": float(np.mean(self.score(texts)))}


class LearnerWorker:
    """Actor body: the LoRA policy with its value head, scoring and updates."""

    def __init__(self, spec: LMRunSpec) -> None:
        torch.set_num_threads(1)
        torch.manual_seed(spec.seed)
        model, _ = _policy_model(spec)
        self.learner = LMLearner(LMPolicy(model), spec.update, seed=spec.seed)

    def adapter_weights(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in self.learner.policy.model.named_parameters()
                if p.requires_grad}

    def prepare(self, batch: SequenceBatch) -> tuple[torch.Tensor, ...]:
        return self.learner.prepare(batch)

    def scores(self, batch: SequenceBatch, validation: SequenceBatch, weights: torch.Tensor,
               method: str) -> torch.Tensor:
        return self.learner.scores(batch, validation, weights, method)

    def update(self, batch: SequenceBatch, kept: torch.Tensor,
               targets: ValueTargets | None) -> dict[str, Any]:
        return self.learner.update(batch, kept, targets)


def advantages(spec: LMRunSpec, batch: SequenceBatch, rewards: torch.Tensor,
               prepared: tuple[torch.Tensor, ...], beta: float
               ) -> tuple[SequenceBatch, ValueTargets | None, float]:
    """The round's advantages over the whole batch (every group complete), and the mean KL."""
    old, ref, values = prepared
    mask = batch.response_mask
    kl = float(((old - ref) * mask).sum() / mask.sum().clamp(min=1))
    if spec.update.estimator == "ppo":
        adv, returns = gae(kl_penalised_rewards(rewards, old, ref, mask, beta), values, mask)
        adv, targets = whiten(adv, mask), ValueTargets(values, returns)
    else:
        adv, targets = grpo_advantages(rewards, mask, spec.group_size), None
    full = SequenceBatch(batch.input_ids, batch.attention_mask, mask, old_logp=old,
                         advantages=adv, ref_logp=ref)
    return full, targets, kl


def validation_weights(spec: LMRunSpec, batch: SequenceBatch, rewards: torch.Tensor,
                       prepared: tuple[torch.Tensor, ...], beta: float) -> torch.Tensor:
    """The target's per-token weights on fresh validation responses (one per prompt):
    ``seq-return`` weighs each by its last-token advantage (PPO's GAE, as the paper's
    f^seq does), any other target by its raw reward."""
    if spec.target != "seq-return":
        return target_weights("reward", batch, rewards)
    single = replace(spec, group_size=1, update=replace(spec.update, estimator="ppo"))
    full, _, _ = advantages(single, batch, rewards, prepared, beta)
    return target_weights("seq-return", batch, last_token_advantage(full))


def last_token_advantage(batch: SequenceBatch) -> torch.Tensor:
    """Each row's advantage at its last response token (the paper's f^seq weight)."""
    mask = batch.response_mask
    last = (mask * torch.arange(mask.shape[1])).argmax(dim=1)
    return batch.advantages[torch.arange(mask.shape[0]), last]


class ProgressWriter:
    """``lm_progress.csv``: one row per round, flushed as it is written."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / PROGRESS_CSV
        self._file = self.path.open("w", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=PROGRESS_FIELDS)
        self._writer.writeheader()

    def write(self, row: dict[str, float]) -> None:
        self._writer.writerow({k: row.get(k, math.nan) for k in PROGRESS_FIELDS})
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def fit(spec: LMRunSpec, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Train ``spec.rounds`` rounds on the connected Ray; returns the run's summary."""
    import ray

    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lang = detox.Language.build(0)
    rollout = ray.remote(num_cpus=1)(RolloutWorker).remote(spec)
    rewarder = ray.remote(num_cpus=0)(RewardWorker).remote(spec)
    learner = ray.remote(num_cpus=1)(LearnerWorker).remote(spec)
    kl_ctl = AdaptiveKL(beta=spec.kl_beta, target=spec.kl_target)
    rng = np.random.default_rng(spec.seed)
    g = torch.Generator().manual_seed(spec.seed)
    progress = ProgressWriter(out)
    rows: list[dict[str, float]] = []
    try:
        for k in range(1, spec.rounds + 1):
            t0 = time.perf_counter()
            ray.get(rollout.set_weights.remote(learner.adapter_weights.remote()))
            prompts = lang.prompts(spec.prompts_per_round, split="train", seed=1000 * spec.seed + k)
            grouped = [p for p in prompts for _ in range(spec.group_size)]
            batch, texts = ray.get(rollout.generate.remote(grouped, seed=2 * k))
            t_gen = time.perf_counter()
            rewards = torch.as_tensor(ray.get(rewarder.score.remote(texts)))
            t_rew = time.perf_counter()
            prepared = ray.get(learner.prepare.remote(batch))
            full, targets, kl = advantages(spec, batch, rewards, prepared, kl_ctl.beta)
            t_prep = time.perf_counter()
            kept = torch.arange(len(rewards))
            scoring_s = 0.0
            if spec.algo != "ppo":
                val_prompts = lang.prompts(spec.validation_prompts, split="train",
                                           seed=10_000 + 1000 * spec.seed + k)
                vbatch, vtexts = ray.get(rollout.generate.remote(val_prompts, seed=2 * k + 1))
                vrewards = torch.as_tensor(ray.get(rewarder.score.remote(vtexts)))
                vprep = ray.get(learner.prepare.remote(vbatch))
                weights = validation_weights(spec, vbatch, vrewards, vprep, kl_ctl.beta)
                ts = time.perf_counter()
                scores = ray.get(learner.scores.remote(full, vbatch, weights,
                                                       spec.scoring_method)).numpy()
                scoring_s = time.perf_counter() - ts
                rule = "neg-bottom" if spec.algo == "iif" else "random"
                sel = select(scores, rule, spec.drop_fraction, rng=rng, iteration=k)
                kept = torch.as_tensor(np.flatnonzero(sel.keep))
            kept = trim_to_minibatches(kept, spec.update.minibatch_size, g)
            frac = 1 - len(kept) / len(rewards)
            metrics = ray.get(learner.update.remote(full, kept, targets))
            kl_ctl.update(kl, n_steps=len(rewards))
            row = {"round": k, "reward_mean": float(rewards.mean()), "kl": kl,
                   "kl_beta": kl_ctl.beta, "frac_dropped": frac, "rows_updated": len(kept),
                   "generate_s": t_gen - t0, "reward_s": t_rew - t_gen,
                   "prepare_s": t_prep - t_rew, "scoring_s": scoring_s,
                   "update_s": metrics["update_s"], "round_s": time.perf_counter() - t0}
            if k % spec.eval_every == 0 or k == spec.rounds:
                eval_prompts = lang.prompts(spec.eval_prompts, split="eval", seed=7)
                ray.get(rollout.set_weights.remote(learner.adapter_weights.remote()))
                _, etexts = ray.get(rollout.generate.remote(eval_prompts, seed=99))
                ev = ray.get(rewarder.evaluate.remote(etexts))
                row.update(eval_toxic_rate=ev["toxic_rate"], eval_negativity=ev["negativity"],
                           eval_reward=ev["reward"])
            progress.write(row)
            rows.append(row)
            echo(f"round {k}/{spec.rounds}: reward {row['reward_mean']:.4f}, KL {kl:.3f}, "
                 f"dropped {frac:.2f}, scoring {scoring_s:.2f} s, update "
                 f"{row['update_s']:.2f} s" + (f", held-out toxic rate "
                                              f"{row['eval_toxic_rate']:.3f}"
                                              if "eval_toxic_rate" in row else ""))
    finally:
        progress.close()
        for actor in (rollout, rewarder, learner):
            ray.kill(actor)
    return {"spec": {**asdict(spec), "update": asdict(spec.update),
                     "sampling": asdict(spec.sampling)}, "rounds": rows}
