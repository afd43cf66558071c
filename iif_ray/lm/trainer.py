"""The LM engine's driver, shaped like veRL's single-controller ``fit`` loop on Ray Core.

One driver, three kinds of actors (:mod:`.workers`) and a scorer (:mod:`.scorers`)::

    rollout actor(s)  --generate-->  records (prompt + response)
    reward actor      --score----->  one reward per record
    learner actor     --prepare--->  old / reference log-probs, values
    driver            --advantages over whole groups, BEFORE any row is dropped
    scorer            --score----->  influence of every record (pre-update weights)
    driver            --select: drop rows (the spec's selection rule), trim to minibatches
    learner actor     --update---->  PPO / GRPO over the kept rows only

The rollout actors get the learner's adapter weights at the start of every round. The
scorer is the learner itself (``num_scorers = 0``) or a pool of scorer actors.

The run directory is the run model's (:mod:`iif_ray.run`, kind ``"lm"``): ``progress.csv``
in :data:`PROGRESS_FIELDS` (evaluation rounds add the held-out detector's reading), one
ledger file per round with every record's prompt, response, reward, last-token advantage,
score and whether it was kept (``iif_ray.ledger.SEQUENCE_LEDGER_SCHEMA``), and in
``checkpoint/`` the learner's state (adapters, value head, optimiser, shuffler), the KL
controller and the driver's generators, every ``checkpoint_every`` rounds and at the end.

Every seed a round uses derives from (run seed, round), so a run resumed from its checkpoint
trains the rounds after it exactly as an uninterrupted run does; the run model drops the
progress rows and ledger files of rounds after the checkpoint first, so none is lost or
duplicated.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from iif_ray.atomic_files import replace_atomically
from iif_ray.attribution.selection import select
from iif_ray.attribution.sequence import SequenceBatch
from iif_ray.ledger import SEQUENCE_LEDGER_SCHEMA, LedgerWriter, ledger_columns
from iif_ray.lm import GROUP_FILTER_ALGOS, INFLUENCE_ALGOS, arith
from iif_ray.lm.advantages import (
    AdaptiveKL,
    advantages,
    last_token_advantage,
    validation_weights,
    varied_groups,
)
from iif_ray.lm.learner import trim_to_minibatches
from iif_ray.lm.scorers import ActorPoolScorer, LearnerScorer
from iif_ray.lm.spec import LMRunSpec
from iif_ray.lm.tasks import corrupt, prompt_source
from iif_ray.lm.workers import LearnerWorker, RewardWorker, RolloutWorker, wait_started
from iif_ray.run import (
    LM,
    ProgressWriter,
    learner_state_path,
    ledger_dir,
    rewind,
    write_run_spec,
    write_summary,
)
from iif_ray.scoring.scorer import SequenceScorer

# The LM engine's progress.csv columns.
PROGRESS_FIELDS = ("round", "reward_mean", "kl", "kl_beta", "frac_dropped", "rows_updated",
                   "groups_dropped",
                   "generate_s", "reward_s", "prepare_s", "scoring_s", "update_s", "round_s",
                   "eval_toxic_rate", "eval_negativity", "eval_reward", "eval_greedy")


@dataclass
class Actors:
    """The run's actors: rollout, reward, learner, and the scorer (the learner or a pool)."""

    rollout: Any
    rewarder: Any
    learner: Any
    scorer: SequenceScorer

    @classmethod
    def start(cls, spec: LMRunSpec) -> Actors:
        import ray

        rollout = ray.remote(num_cpus=spec.rollout_cpus,
                             num_gpus=spec.rollout_gpus)(RolloutWorker).remote(spec)
        rewarder = ray.remote(num_cpus=0)(RewardWorker).remote(spec)
        learner = ray.remote(num_cpus=spec.learner_cpus,
                             num_gpus=spec.learner_gpus)(LearnerWorker).remote(spec)
        wait_started({"rollout": rollout, "reward": rewarder, "learner": learner}, spec)
        scorer: SequenceScorer = (
            ActorPoolScorer(spec, learner, spec.num_scorers, num_cpus=spec.cpus_per_scorer,
                            num_gpus=spec.gpus_per_scorer, timeout_s=spec.scorer_timeout_s)
            if spec.num_scorers else LearnerScorer(learner, spec.scoring_method))
        return cls(rollout, rewarder, learner, scorer)

    def stop(self) -> None:
        import ray

        for actor in (self.rollout, self.rewarder, self.learner):
            ray.kill(actor)
        self.scorer.shutdown()


@dataclass
class DriverState:
    """What the driver itself carries from round to round: the KL controller, the selection
    rule's generator and the minibatch trimmer's; saved with the learner's state. Also the
    reference policy's validation responses and rewards (``validation="reference"``),
    generated once per run and not saved: a resumed run regenerates the same ones (fixed
    prompts, fixed seed, the reference never changes)."""

    spec: LMRunSpec
    kl: AdaptiveKL = field(init=False)
    rng: np.random.Generator = field(init=False)
    generator: torch.Generator = field(init=False)
    reference_validation: tuple[SequenceBatch, torch.Tensor, torch.Tensor | None] | None = \
        field(init=False, default=None)  # responses, rewards, reference log-probabilities

    def __post_init__(self) -> None:
        self.kl = AdaptiveKL(beta=self.spec.kl_beta, target=self.spec.kl_target)
        self.rng = np.random.default_rng(self.spec.seed)
        self.generator = torch.Generator().manual_seed(self.spec.seed)

    def state(self) -> dict[str, Any]:
        return {"kl_beta": self.kl.beta, "numpy_rng": self.rng.bit_generator.state,
                "torch_generator": self.generator.get_state()}

    def load(self, state: dict[str, Any]) -> None:
        self.kl.beta = state["kl_beta"]
        self.rng.bit_generator.state = state["numpy_rng"]
        self.generator.set_state(state["torch_generator"])


def fit(spec: LMRunSpec, echo: Callable[[str], None] = print, *,
        on_round: Callable[[dict[str, float]], None] | None = None,
        resume: bool = False) -> dict[str, Any]:
    """Train ``spec.rounds`` rounds on the connected Ray; returns the run's summary.

    Args:
        spec: the run.
        echo: one progress line per round.
        on_round: called with every round's progress row, in round order; a resumed run
            first passes the rows its checkpoint holds (a Tune trial reports them again).
        resume: continue the run in ``spec.out_dir`` from its last checkpoint (from round 1
            when it has none); a directory with the LM engine's old file names is migrated.
    """
    import ray

    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Also on resume: the placement may have changed (train-lm --resume --num-gpus-per-*).
    write_run_spec(out, spec.to_dict(), LM)
    lang = prompt_source(spec)  # the task's prompts (iif_ray.lm.tasks)
    actors = Actors.start(spec)
    driver = DriverState(spec)
    rows: list[dict[str, float]] = []
    done = 0  # the round the checkpoint resumed from was taken after

    def restore(_checkpoint: Path) -> int | None:
        nonlocal done
        path = learner_state_path(out)
        if not path.is_file():
            return None
        state = torch.load(path, weights_only=False)
        ray.get(actors.learner.load_state.remote(state["learner"]))
        driver.load(state)
        rows.extend(state["rows"])
        done = state["round"]
        echo(f"resuming {out} after round {done} (its checkpoint)")
        return done

    def save_checkpoint(k: int) -> None:
        state = {"round": k, "rows": rows, "learner": ray.get(actors.learner.state.remote()),
                 **driver.state()}
        replace_atomically(learner_state_path(out), lambda p: torch.save(state, p))

    try:
        rewind(out, PROGRESS_FIELDS, restore if resume else None)
        for row in rows:
            if on_round:
                on_round(row)
        progress = ProgressWriter(out, PROGRESS_FIELDS, append=True)
        ledger = LedgerWriter(str(ledger_dir(out)))
        try:
            for k in range(done + 1, spec.rounds + 1):
                row = train_round(spec, k, actors, driver, lang, ledger)
                progress.write(row)
                rows.append(row)
                if on_round:
                    on_round(row)
                if k % spec.checkpoint_every == 0 or k == spec.rounds:
                    save_checkpoint(k)
                echo(round_line(spec, row))
        finally:
            progress.close()
    finally:
        actors.stop()
    summary = {"spec": spec.to_dict(), "rounds": rows}
    write_summary(out, summary)
    return summary


def train_round(spec: LMRunSpec, k: int, actors: Actors, driver: DriverState, lang: Any,
                ledger: LedgerWriter) -> dict[str, float]:
    """Round ``k``: generate, reward, advantages, score, select, update; its ledger file is
    written and its progress row returned."""
    import ray

    t0 = time.perf_counter()
    # The round's pre-update weights: the rollout samples with them, scorers score at them.
    weights_ref = actors.learner.adapter_weights.remote()
    ray.get(actors.rollout.set_weights.remote(weights_ref))
    prompts = lang.prompts(spec.prompts_per_round, split="train", seed=1000 * spec.seed + k)
    grouped = [p for p in prompts for _ in range(spec.group_size)]
    batch, texts = ray.get(actors.rollout.generate.remote(
        grouped, seed=_sampling_seed(spec, 2 * k)))
    t_gen = time.perf_counter()
    # A copy: Ray hands back a read-only array (zero-copy from the object store).
    rewards = torch.tensor(ray.get(actors.rewarder.score.remote(texts, grouped)))
    rewards, corrupted = corrupt(spec, k, rewards)  # reward_noise's flips, seeded by (seed, k)
    t_rew = time.perf_counter()
    prepared = ray.get(actors.learner.prepare.remote(batch))
    # Advantages over the whole batch, before any row or group is dropped.
    full, targets, kl = advantages(spec, batch, rewards, prepared, driver.kl.beta)
    t_prep = time.perf_counter()
    kept = torch.arange(len(rewards))
    groups_dropped = 0
    if spec.algo in GROUP_FILTER_ALGOS:
        # DAPO's dynamic sampling without its refill: the round trains on the groups whose
        # rewards vary (see varied_groups for why no refill).
        kept = torch.nonzero(varied_groups(rewards, spec.group_size)).ravel()
        groups_dropped = (len(rewards) - len(kept)) // spec.group_size
    scores = torch.full((len(rewards),), math.nan)
    scoring_s = 0.0
    if spec.algo in INFLUENCE_ALGOS and len(kept):
        validation, weights = validation_target(spec, k, actors, driver, lang)
        ts = time.perf_counter()
        # Only the records still in the round are scored (their loss denominators too).
        rows = full if len(kept) == len(rewards) else full.select(kept)
        scores[kept] = actors.scorer.score(rows, validation, weights,
                                           policy_weights=weights_ref)
        scoring_s = time.perf_counter() - ts
        sel = select(scores[kept].numpy(), spec.selection_rule, spec.drop_fraction,
                     rng=driver.rng, advantages=last_token_advantage(rows).numpy(),
                     round_index=k)
        kept = kept[torch.as_tensor(np.flatnonzero(sel.keep))]
    kept = trim_to_minibatches(kept, spec.update.minibatch_size, driver.generator)
    frac = 1 - len(kept) / len(rewards)
    metrics = ray.get(actors.learner.update.remote(full, kept, targets))
    write_ledger(ledger, k, grouped, texts, rewards, full, scores, kept,
                 per_group=spec.group_size, corrupted=corrupted)
    # TRL's controller (the paper's) reads the KL summed over each response's tokens.
    per_row = float(full.response_mask.sum()) / len(rewards)
    driver.kl.update(kl * per_row if spec.kl_per == "sequence" else kl,
                     n_steps=len(rewards))
    row = {"round": k, "reward_mean": float(rewards.mean()), "kl": kl,
           "kl_beta": driver.kl.beta, "frac_dropped": frac, "rows_updated": len(kept),
           "groups_dropped": groups_dropped,
           "generate_s": t_gen - t0, "reward_s": t_rew - t_gen,
           "prepare_s": t_prep - t_rew, "scoring_s": scoring_s,
           "update_s": metrics["update_s"], "round_s": time.perf_counter() - t0}
    if k % spec.eval_every == 0 or k == spec.rounds:
        row.update(evaluate(spec, actors, lang))
    return row


def validation_target(spec: LMRunSpec, k: int, actors: Actors, driver: DriverState,
                      lang: Any) -> tuple[SequenceBatch, torch.Tensor]:
    """Round ``k``'s validation responses (one per prompt; ``spec.validation`` says which)
    and the target's per-token weights on them, at the round's pre-update weights.

    The weights (last-token advantages: the KL penalty against the current policy, the
    value head) are recomputed every round; with ``reference`` the responses themselves
    are generated and rewarded once per run.
    """
    import ray

    ref_logp = None
    if spec.validation == "reference":
        if driver.reference_validation is None:
            prompts = validation_prompts(spec, lang)
            validation, texts = ray.get(actors.rollout.generate.remote(
                prompts, seed=_sampling_seed(spec, 0), reference=True))
            rewards = torch.as_tensor(ray.get(actors.rewarder.score.remote(texts, prompts)))
            driver.reference_validation = (validation, rewards, None)
        validation, rewards, ref_logp = driver.reference_validation
    else:
        prompts = (validation_prompts(spec, lang) if spec.validation == "policy" else
                   lang.prompts(spec.validation_prompts, split="train",
                                seed=10_000 + 1000 * spec.seed + k))
        validation, texts = ray.get(actors.rollout.generate.remote(
            prompts, seed=_sampling_seed(spec, 2 * k + 1)))
        rewards = torch.as_tensor(ray.get(actors.rewarder.score.remote(texts, prompts)))
    prepared = ray.get(actors.learner.prepare.remote(validation, ref_logp))
    if spec.validation == "reference" and ref_logp is None:
        # Fixed responses' reference log-probabilities never change: one forward pass a run.
        driver.reference_validation = (validation, rewards, prepared[1])
    return validation, validation_weights(spec, validation, rewards, prepared, driver.kl.beta)


# The fixed validation prompts' seed: one draw for every run and seed (the paper's first
# 1,024 held-out prompts), apart from the training draws (seeds 1000 x seed + round).
VALIDATION_PROMPT_SEED = 987_654_321


def validation_prompts(spec: LMRunSpec, lang: Any) -> list[str]:
    """The run's fixed validation prompts: ``spec.validation_prompts`` of the training
    distribution, drawn once with their own seed, so never a round's training draw (for a
    prompt file: its training split, which has no third split to hold them out from)."""
    return lang.prompts(spec.validation_prompts, split="train", seed=VALIDATION_PROMPT_SEED)


def evaluate(spec: LMRunSpec, actors: Actors, lang: Any) -> dict[str, float]:
    """The updated policy on the fixed held-out prompts: the detector's and reward's reading
    of sampled responses (detox), or (arith) the exact accuracy without sampling noise:
    ``eval_reward`` the policy's mean probability of the exact answer (what GRPO's expected
    reward is, computed in closed form), ``eval_greedy`` the share of greedy answers that
    are exact."""
    import ray

    prompts = lang.prompts(spec.eval_prompts, split="eval", seed=7)
    ray.get(actors.rollout.set_weights.remote(actors.learner.adapter_weights.remote()))
    arith_task = spec.task == "arith"
    _, texts = ray.get(actors.rollout.generate.remote(prompts, seed=99, greedy=arith_task))
    ev = ray.get(actors.rewarder.evaluate.remote(texts, prompts))
    if arith_task:
        exact = ray.get(actors.rollout.answer_probability.remote(
            prompts, [arith.answer(p) for p in prompts]))
        return {"eval_reward": float(np.mean(exact)), "eval_greedy": ev["reward"]}
    return {"eval_toxic_rate": ev.get("toxic_rate", math.nan),
            "eval_negativity": ev.get("negativity", math.nan), "eval_reward": ev["reward"]}


def round_line(spec: LMRunSpec, row: dict[str, float]) -> str:
    """The line ``echo`` prints for a round."""
    line = (f"round {row['round']}/{spec.rounds}: reward {row['reward_mean']:.3f}, KL "
            f"{row['kl']:.3f}, dropped {row['frac_dropped']:.2f}, scoring "
            f"{row['scoring_s']:.2f} s, update {row['update_s']:.2f} s")
    if spec.task == "arith" and "eval_reward" in row:
        line += (f", held-out accuracy {row['eval_reward']:.3f} (greedy "
                 f"{row['eval_greedy']:.3f})")
    elif "eval_toxic_rate" in row:
        line += f", held-out toxic rate {row['eval_toxic_rate']:.3f}"
    return line


def write_ledger(ledger: LedgerWriter, k: int, prompts: list[str], texts: list[str],
                 rewards: torch.Tensor, full: SequenceBatch, scores: torch.Tensor,
                 kept: torch.Tensor, *, per_group: int, corrupted: np.ndarray | None = None
                 ) -> None:
    """Round ``k``'s records (every one, dropped ones too) as one ledger file; ``rewards``
    as the learner saw them, ``corrupted`` marking those flipped on purpose."""
    n = len(texts)
    mask = full.response_mask
    keep = np.zeros(n, dtype=bool)
    keep[kept.numpy()] = True
    cols = ledger_columns(
        iteration=k, env_steps=k * n, learner=0, schema=SEQUENCE_LEDGER_SCHEMA,
        group=np.arange(n) // per_group, prompt=np.asarray(prompts, dtype=object),
        response=np.asarray(texts, dtype=object), response_tokens=mask.sum(1).numpy(),
        reward=rewards.numpy(), advantage=last_token_advantage(full).numpy(),
        logp=(full.old_logp * mask).sum(1).numpy(), score=scores.numpy(), kept=keep,
        corrupted=np.zeros(n, dtype=bool) if corrupted is None else corrupted)
    ledger.write(k, 0, cols)


def _sampling_seed(spec: LMRunSpec, stream: int) -> int:
    """Each (run seed, stream) its own generation seed: seeds differ in sampling noise too."""
    return 1_000_003 * spec.seed + stream
