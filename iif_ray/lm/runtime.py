"""The LM runtime on Ray Core, shaped like veRL's single-controller ``fit`` loop.

One driver, three kinds of actors::

    rollout actor(s)  --generate-->  records (prompt + response)
    reward actor      --score----->  one reward per record
    learner actor     --prepare--->  old / reference log-probs, values
    driver            --advantages over whole groups, BEFORE any row is dropped
    learner actor     --score----->  influence of every record (pre-update weights)
    driver            --select: drop rows (IIF, or the random control), trim to minibatches
    learner actor     --update---->  PPO / GRPO over the kept rows only

The rollout actors get the learner's adapter weights at the start of every round. With
``num_scorers > 0`` the scores come from a pool of scorer actors instead of the learner: the
learner computes the target gradient once, each scorer scores a contiguous shard of the rows
(loss denominators fixed to the whole batch first, so shards add up to the same scores).

The run directory (this module owns its LM files)::

    lm_run.json         the run spec, written first (``iif-ray train-lm --resume`` reads it)
    lm_progress.csv     one row per round: rewards, KL, fraction dropped, seconds per stage;
                        evaluation rounds add the held-out detector's reading
    ledger/             one Parquet file per round: every record's prompt, response, reward,
                        last-token advantage, score and whether it was kept
                        (``iif_ray.ledger.SEQUENCE_LEDGER_SCHEMA``)
    lm_checkpoint.pt    learner state (adapters, value head, optimiser, shuffler), the KL
                        controller and the driver's generators, every ``checkpoint_every``
                        rounds and at the end; replaced atomically
    lm_summary.json     written last, atomically: its presence means the run completed

Every seed a round uses derives from (run seed, round), so a run resumed from its checkpoint
trains the rounds after it exactly as an uninterrupted run does; progress rows of rounds
after the checkpoint are dropped first, so none is lost or duplicated.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from iif_ray.atomic_files import replace_atomically, write_json_atomically
from iif_ray.attribution.selection import select
from iif_ray.attribution.sequence import SequenceBatch, target_weights
from iif_ray.ledger import (
    SEQUENCE_LEDGER_SCHEMA,
    LedgerWriter,
    ledger_columns,
    remove_rounds_after,
)
from iif_ray.lm import LM_ALGOS, detox
from iif_ray.lm.advantages import AdaptiveKL, gae, grpo_advantages, kl_penalised_rewards, whiten
from iif_ray.lm.generation import SamplingSettings, response_texts, sample_records
from iif_ray.lm.learner import (
    LMLearner,
    LMPolicy,
    UpdateSettings,
    ValueTargets,
    score_rows,
    trim_to_minibatches,
)
from iif_ray.lm.models import load_policy, with_lora
from iif_ray.lm.prompts import PromptFile

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
RUN_SPEC = "lm_run.json"
PROGRESS_CSV = "lm_progress.csv"
CHECKPOINT = "lm_checkpoint.pt"
SUMMARY = "lm_summary.json"
LEDGER = "ledger"
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
    checkpoint_every: int = 5
    num_scorers: int = 0  # 0: the learner scores; n: a pool of n scorer actors
    cpus_per_scorer: float = 1.0
    # CPUs the rollout and learner actors reserve. They never compute at the same time (the
    # driver waits on each), so a Tune trial can give the rollout actor less.
    rollout_cpus: float = 1.0
    learner_cpus: float = 1.0
    # GPUs each actor reserves (fractions share one); an actor with any computes on "cuda".
    rollout_gpus: float = 0.0
    learner_gpus: float = 0.0
    gpus_per_scorer: float = 0.0
    # Seconds a scorer actor may take on its shard before it is replaced and the shard
    # re-scored (three tries); large models scoring on CPU need it long.
    scorer_timeout_s: float = 1800.0
    # The base model's weights: "bfloat16" halves their memory on a GPU. The LoRA adapters,
    # the value head, log-probabilities and scores stay float32 (peft and the code upcast).
    dtype: str = "float32"
    seed: int = 0
    reward: str | None = None  # a local classifier directory; None: detox-mini's classifier
    reward_label: str | None = None
    # A local prompt file (iif_ray.lm.prompts); None: detox-mini's generated prompts.
    prompts: str | None = None

    def __post_init__(self) -> None:
        if self.algo not in LM_ALGOS:
            raise ValueError(f"unknown algo {self.algo!r}; accepted: {list(LM_ALGOS)}")
        if self.rounds < 1 or self.prompts_per_round < 1 or self.group_size < 1:
            raise ValueError("rounds, prompts_per_round and group_size must be >= 1")
        if not 0 <= self.drop_fraction < 1:
            raise ValueError(f"drop_fraction must be in [0, 1), got {self.drop_fraction}")
        if self.update.estimator == "grpo" and self.group_size < 2:
            raise ValueError("grpo needs group_size >= 2 (advantages are group-relative)")
        if self.checkpoint_every < 1 or self.num_scorers < 0:
            raise ValueError("checkpoint_every must be >= 1 and num_scorers >= 0")
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; accepted: {list(DTYPES)}")
        for name in ("rollout_gpus", "learner_gpus", "gpus_per_scorer"):
            gpus = getattr(self, name)
            if gpus < 0 or (gpus > 1 and gpus != int(gpus)):
                raise ValueError(f"{name} must be a fraction in [0, 1] or a whole number of "
                                 f"GPUs (Ray's rule), got {gpus:g}")
        if self.scorer_timeout_s <= 0:
            raise ValueError(f"scorer_timeout_s must be > 0, got {self.scorer_timeout_s}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "update": asdict(self.update), "sampling": asdict(self.sampling),
                "lora_targets": list(self.lora_targets)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LMRunSpec:
        return cls(**{**d, "update": UpdateSettings(**d["update"]),
                      "sampling": SamplingSettings(**d["sampling"]),
                      "lora_targets": tuple(d["lora_targets"])})


def device_for(gpus: float) -> str:
    """An actor computes on the GPU Ray gave it (``CUDA_VISIBLE_DEVICES`` names only that
    one, so "cuda" is it), else on CPU."""
    return "cuda" if gpus > 0 else "cpu"


def to_cpu(obj: Any) -> Any:
    """``obj`` with every tensor in it (dicts, lists, tuples) on CPU: what an actor returns
    and what a checkpoint stores, so a run saved on a GPU resumes anywhere."""
    if torch.is_tensor(obj):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def _policy_model(spec: LMRunSpec, device: str = "cpu") -> tuple[Any, Any]:
    model, tokenizer = load_policy(spec.model, dtype=DTYPES[spec.dtype])
    model = with_lora(model, rank=spec.lora_rank, target_modules=list(spec.lora_targets))
    return model.to(device), tokenizer


class RolloutWorker:
    """Actor body: generates responses with Hugging Face ``generate`` (CPU or GPU)."""

    def __init__(self, spec: LMRunSpec) -> None:
        torch.set_num_threads(1)
        self.spec = spec
        self.model, self.tokenizer = _policy_model(spec, device_for(spec.rollout_gpus))
        self.model.eval()

    def set_weights(self, weights: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(weights, strict=False)

    def generate(self, prompts: list[str], seed: int) -> tuple[SequenceBatch, list[str]]:
        batch = sample_records(self.model, self.tokenizer, prompts, self.spec.sampling,
                               seed).to("cpu")
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


class ScorerWorker:
    """Actor body: a replica of the LoRA policy that scores shards of a round's rows."""

    def __init__(self, spec: LMRunSpec) -> None:
        torch.set_num_threads(1)
        self.device = device_for(spec.gpus_per_scorer)
        self.policy = LMPolicy(_policy_model(spec, self.device)[0]).to(self.device)

    def info(self) -> dict[str, Any]:
        """Returns once the replica is built (the pool waits on it); where this scorer runs."""
        from iif_ray.scoring.pool import actor_placement

        return actor_placement(self.device)

    def score(self, weights: dict[str, torch.Tensor], target: dict[str, torch.Tensor],
              shard: SequenceBatch, loss: Any, method: str) -> torch.Tensor:
        self.policy.model.load_state_dict(weights, strict=False)
        target = {k: v.to(self.device) for k, v in target.items()}
        return score_rows(self.policy, shard.to(self.device), loss, target, method).cpu()


class LearnerWorker:
    """Actor body: the LoRA policy with its value head, scoring and updates."""

    def __init__(self, spec: LMRunSpec) -> None:
        torch.set_num_threads(1)
        torch.manual_seed(spec.seed)  # the value head's initialisation, on CPU (any device)
        self.device = device_for(spec.learner_gpus)
        model, _ = _policy_model(spec, self.device)
        self.learner = LMLearner(LMPolicy(model).to(self.device), spec.update, seed=spec.seed)

    # Everything comes in on CPU (the driver's batches) and goes back on CPU.
    def adapter_weights(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().cpu().clone()
                for n, p in self.learner.policy.model.named_parameters() if p.requires_grad}

    def prepare(self, batch: SequenceBatch) -> tuple[torch.Tensor, ...]:
        return to_cpu(self.learner.prepare(batch.to(self.device)))

    def scores(self, batch: SequenceBatch, validation: SequenceBatch, weights: torch.Tensor,
               method: str) -> torch.Tensor:
        return self.learner.scores(batch.to(self.device), validation.to(self.device),
                                   weights.to(self.device), method).cpu()

    def target(self, validation: SequenceBatch, weights: torch.Tensor
               ) -> dict[str, torch.Tensor]:
        return to_cpu(self.learner.target(validation.to(self.device), weights.to(self.device)))

    def state(self) -> dict[str, Any]:
        return to_cpu(self.learner.state())

    def load_state(self, state: dict[str, Any]) -> None:
        self.learner.load_state(state)  # the optimiser moves its state to the parameters'

    def update(self, batch: SequenceBatch, kept: torch.Tensor,
               targets: ValueTargets | None) -> dict[str, Any]:
        return self.learner.update(batch.to(self.device), kept,
                                   targets.to(self.device) if targets is not None else None)


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
    f^seq does), any other target by its raw reward.

    Each response's weight is centred on the validation mean (a baseline). On-policy
    log-likelihood gradients average to zero, so a constant part of the weights adds only
    noise to the target's gradient, never direction; without the baseline that noise is
    most of the target whenever the value head does not yet predict the reward's level (the
    first rounds: it starts at zero, and detox-mini's rewards are all near +5).
    """
    if spec.target != "seq-return":
        return target_weights("reward", batch, rewards - rewards.mean())
    single = replace(spec, group_size=1, update=replace(spec.update, estimator="ppo"))
    full, _, _ = advantages(single, batch, rewards, prepared, beta)
    last = last_token_advantage(full)
    return target_weights("seq-return", batch, last - last.mean())


def last_token_advantage(batch: SequenceBatch) -> torch.Tensor:
    """Each row's advantage at its last response token (the paper's f^seq weight)."""
    mask = batch.response_mask
    last = (mask * torch.arange(mask.shape[1])).argmax(dim=1)
    return batch.advantages[torch.arange(mask.shape[0]), last]


class ProgressWriter:
    """``lm_progress.csv``: one row per round, flushed as it is written.

    ``keep_until``: resume after that round: rows of later rounds (trained after the
    checkpoint, about to be trained again) are dropped, earlier ones kept; ``None`` starts
    a new file.
    """

    def __init__(self, out_dir: Path, keep_until: int | None = None) -> None:
        self.path = out_dir / PROGRESS_CSV
        kept: list[dict[str, str]] = []
        if keep_until is not None and self.path.exists():
            with self.path.open(newline="") as f:
                kept = [r for r in csv.DictReader(f) if int(r["round"]) <= keep_until]

        def write_kept(tmp: Path) -> None:
            with tmp.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=PROGRESS_FIELDS)
                writer.writeheader()
                writer.writerows(kept)

        # The kept rows replace the file whole (a kill here loses none of them); new rows
        # are appended after.
        replace_atomically(self.path, write_kept)
        self._file = self.path.open("a", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=PROGRESS_FIELDS)

    def write(self, row: dict[str, float]) -> None:
        self._writer.writerow({k: row.get(k, math.nan) for k in PROGRESS_FIELDS})
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_progress(out_dir: str | Path) -> list[dict[str, float]]:
    """The rows of a run's ``lm_progress.csv``, as numbers (``nan`` where a round has no
    evaluation), in round order."""
    with (Path(out_dir) / PROGRESS_CSV).open(newline="") as f:
        rows = [{k: float(v) if v not in ("", None) else math.nan for k, v in r.items()}
                for r in csv.DictReader(f)]
    for r in rows:
        r["round"] = int(r["round"])
    return sorted(rows, key=lambda r: r["round"])


def read_spec(out_dir: str | Path) -> LMRunSpec:
    """The spec a run directory was started with.

    Raises:
        FileNotFoundError: ``out_dir`` holds no LM run.
    """
    path = Path(out_dir) / RUN_SPEC
    if not path.is_file():
        raise FileNotFoundError(f"{str(out_dir)!r} holds no LM run (no {RUN_SPEC})")
    return LMRunSpec.from_dict(json.loads(path.read_text()))


class ActorScorers:
    """The attribution pool for sequence records: scorer actors sharing out a round's rows
    (the classic path's :class:`~iif_ray.scoring.pool.ShardedActors`, so a scorer that dies
    or hangs is replaced and its shard re-scored; a shard that keeps failing fails the round,
    which never trains silently unfiltered)."""

    def __init__(self, spec: LMRunSpec, n: int, *, num_cpus: float = 1.0,
                 num_gpus: float = 0.0, start_timeout_s: float = 120.0,
                 timeout_s: float = 300.0, max_retries: int = 2) -> None:
        from iif_ray.scoring.pool import ShardedActors

        self._actors = ShardedActors(
            ScorerWorker, (spec,), n, num_cpus=num_cpus, num_gpus=num_gpus, timeout_s=timeout_s,
            max_retries=max_retries, start_timeout_s=start_timeout_s,
            no_room_hint="Beside the rollout and learner actors: lower --num-scorers or "
                         "--cpus-per-scorer, or use --num-scorers 0 to score in the learner.")

    @property
    def actors(self) -> list:
        return self._actors.actors

    @property
    def total_retries(self) -> int:
        return self._actors.total_retries

    def score(self, weights: Any, target: Any, batch: SequenceBatch, loss: Any,
              method: str) -> torch.Tensor:
        """Scores of ``batch``'s rows in row order (``weights`` and ``target``: object refs)."""
        def call(actor: Any, start: int, stop: int) -> Any:
            return actor.score.remote(weights, target, batch.select(list(range(start, stop))),
                                      loss, method)

        return torch.cat(self._actors.run(len(batch.input_ids), call).results)

    def shutdown(self) -> None:
        self._actors.shutdown()


def wait_started(actors: dict[str, Any], spec: LMRunSpec, timeout_s: float = 300.0) -> None:
    """Wait until every actor is built (model loaded), at most ``timeout_s``.

    Without the bound, actors the cluster cannot place (GPUs it does not have, a resumed
    GPU run on a CPU machine) would leave the run waiting forever, silently.

    Raises:
        RuntimeError: an actor did not start in time; the message names the reservations.
    """
    import ray
    from ray.exceptions import GetTimeoutError

    refs = {name: actor.__ray_ready__.remote() for name, actor in actors.items()}
    try:
        ray.get(list(refs.values()), timeout=timeout_s)
    except GetTimeoutError:
        ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=0)
        waiting = [name for name, ref in refs.items() if ref not in ready]
        for actor in actors.values():
            ray.kill(actor)
        raise RuntimeError(
            f"the {', '.join(waiting)} actor(s) did not start within {timeout_s:.0f} s: the "
            f"cluster has no room for them (rollout {spec.rollout_cpus:g} CPU / "
            f"{spec.rollout_gpus:g} GPU, learner {spec.learner_cpus:g} CPU / "
            f"{spec.learner_gpus:g} GPU; available: {ray.available_resources()})") from None


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
            when it has none).
    """
    import ray

    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Also on resume: the placement may have changed (train-lm --resume --num-gpus-per-*).
    write_json_atomically(out / RUN_SPEC, spec.to_dict())
    lang = PromptFile(spec.prompts) if spec.prompts else detox.Language.build(0)
    rollout = ray.remote(num_cpus=spec.rollout_cpus,
                         num_gpus=spec.rollout_gpus)(RolloutWorker).remote(spec)
    rewarder = ray.remote(num_cpus=0)(RewardWorker).remote(spec)
    learner = ray.remote(num_cpus=spec.learner_cpus,
                         num_gpus=spec.learner_gpus)(LearnerWorker).remote(spec)
    wait_started({"rollout": rollout, "reward": rewarder, "learner": learner}, spec)
    pool = (ActorScorers(spec, spec.num_scorers, num_cpus=spec.cpus_per_scorer,
                         num_gpus=spec.gpus_per_scorer, timeout_s=spec.scorer_timeout_s)
            if spec.num_scorers else None)
    kl_ctl = AdaptiveKL(beta=spec.kl_beta, target=spec.kl_target)
    rng = np.random.default_rng(spec.seed)
    g = torch.Generator().manual_seed(spec.seed)
    done, rows = 0, []
    checkpoint = out / CHECKPOINT
    if resume and checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False)
        ray.get(learner.load_state.remote(state["learner"]))
        kl_ctl.beta = state["kl_beta"]
        rng.bit_generator.state = state["numpy_rng"]
        g.set_state(state["torch_generator"])
        done, rows = state["round"], state["rows"]
        echo(f"resuming {out} after round {done} (its checkpoint)")
    for row in rows:
        if on_round:
            on_round(row)
    progress = ProgressWriter(out, keep_until=done if resume else None)
    ledger = LedgerWriter(str(out / LEDGER))
    remove_rounds_after(ledger.root, done)

    def save_checkpoint(k: int) -> None:
        state = {"round": k, "rows": rows, "learner": ray.get(learner.state.remote()),
                 "kl_beta": kl_ctl.beta, "numpy_rng": rng.bit_generator.state,
                 "torch_generator": g.get_state()}
        replace_atomically(checkpoint, lambda p: torch.save(state, p))

    try:
        for k in range(done + 1, spec.rounds + 1):
            t0 = time.perf_counter()
            # The round's pre-update weights: the rollout samples with them, scorers score at them.
            weights_ref = learner.adapter_weights.remote()
            ray.get(rollout.set_weights.remote(weights_ref))
            prompts = lang.prompts(spec.prompts_per_round, split="train", seed=1000 * spec.seed + k)
            grouped = [p for p in prompts for _ in range(spec.group_size)]
            batch, texts = ray.get(rollout.generate.remote(
                grouped, seed=_sampling_seed(spec, 2 * k)))
            t_gen = time.perf_counter()
            rewards = torch.as_tensor(ray.get(rewarder.score.remote(texts)))
            t_rew = time.perf_counter()
            prepared = ray.get(learner.prepare.remote(batch))
            full, targets, kl = advantages(spec, batch, rewards, prepared, kl_ctl.beta)
            t_prep = time.perf_counter()
            kept = torch.arange(len(rewards))
            scores = torch.full((len(rewards),), math.nan)
            scoring_s = 0.0
            if spec.algo != "ppo":
                val_prompts = lang.prompts(spec.validation_prompts, split="train",
                                           seed=10_000 + 1000 * spec.seed + k)
                vbatch, vtexts = ray.get(rollout.generate.remote(
                    val_prompts, seed=_sampling_seed(spec, 2 * k + 1)))
                vrewards = torch.as_tensor(ray.get(rewarder.score.remote(vtexts)))
                vprep = ray.get(learner.prepare.remote(vbatch))
                weights = validation_weights(spec, vbatch, vrewards, vprep, kl_ctl.beta)
                ts = time.perf_counter()
                if pool is None:
                    scores = ray.get(learner.scores.remote(full, vbatch, weights,
                                                           spec.scoring_method))
                else:
                    loss = spec.update.policy_loss().for_batch(full)
                    target_ref = learner.target.remote(vbatch, weights)
                    # Resolved first: the scorers' clocks start with their own work, and a
                    # learner failure surfaces as the learner's, not as dying scorers.
                    ray.get(target_ref)
                    scores = pool.score(weights_ref, target_ref, full, loss,
                                        spec.scoring_method)
                scoring_s = time.perf_counter() - ts
                rule = "neg-bottom" if spec.algo == "iif" else "random"
                sel = select(scores.numpy(), rule, spec.drop_fraction, rng=rng, iteration=k)
                kept = torch.as_tensor(np.flatnonzero(sel.keep))
            kept = trim_to_minibatches(kept, spec.update.minibatch_size, g)
            frac = 1 - len(kept) / len(rewards)
            metrics = ray.get(learner.update.remote(full, kept, targets))
            write_ledger(ledger, k, grouped, texts, rewards, full, scores, kept,
                         per_group=spec.group_size)
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
            if on_round:
                on_round(row)
            if k % spec.checkpoint_every == 0 or k == spec.rounds:
                save_checkpoint(k)
            echo(f"round {k}/{spec.rounds}: reward {row['reward_mean']:.3f}, KL {kl:.3f}, "
                 f"dropped {frac:.2f}, scoring {scoring_s:.2f} s, update "
                 f"{row['update_s']:.2f} s" + (f", held-out toxic rate "
                                              f"{row['eval_toxic_rate']:.3f}"
                                              if "eval_toxic_rate" in row else ""))
    finally:
        progress.close()
        for actor in (rollout, rewarder, learner, *(pool.actors if pool else ())):
            ray.kill(actor)
    summary = {"spec": spec.to_dict(), "rounds": rows}
    write_json_atomically(out / SUMMARY, summary)
    return summary


def write_ledger(ledger: LedgerWriter, k: int, prompts: list[str], texts: list[str],
                 rewards: torch.Tensor, full: SequenceBatch, scores: torch.Tensor,
                 kept: torch.Tensor, *, per_group: int) -> None:
    """Round ``k``'s records (every one, dropped ones too) as one ledger file."""
    n = len(texts)
    mask = full.response_mask
    keep = np.zeros(n, dtype=bool)
    keep[kept.numpy()] = True
    cols = ledger_columns(
        iteration=k, env_steps=k * n, learner=0, schema=SEQUENCE_LEDGER_SCHEMA,
        group=np.arange(n) // per_group, prompt=np.asarray(prompts, dtype=object),
        response=np.asarray(texts, dtype=object), response_tokens=mask.sum(1).numpy(),
        reward=rewards.numpy(), advantage=last_token_advantage(full).numpy(),
        logp=(full.old_logp * mask).sum(1).numpy(), score=scores.numpy(), kept=keep)
    ledger.write(k, 0, cols)


def _sampling_seed(spec: LMRunSpec, stream: int) -> int:
    """Each (run seed, stream) its own generation seed: seeds differ in sampling noise too."""
    return 1_000_003 * spec.seed + stream
