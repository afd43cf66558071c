"""``iif-ray bench lm``: where the seconds of a language-model round go.

One round's worth of sequences is sampled from the policy and rewarded, prepared and given
advantages as in training; then, in one process and one thread (the actors' setting), every
part of a round is timed on the *same* batch: generation (the task's sampling settings),
reward (detox-mini's classifier), prepare (old and reference log-probabilities, values,
advantages), the validation responses the influence target is built from (their generation,
reward and prepare: the default ``validation="fresh"`` makes them every round), influence
scoring (every method) and the PPO update (every minibatch size, the same epochs). Each
part's share of a round is printed per minibatch size.

The update is then split into its parts by :func:`update_parts`, an instrumented copy of
:meth:`LMLearner.update`'s loop (same steps, same numbers; the production loop carries no
timers): moving the rows, the forward pass, the loss, backward, gradient clipping, the
optimiser step, reading the metrics and the rest of the loop. Timers read wall time on the
CPU, where every operation has finished when it returns.

The paper's RLHF settings are 4 epochs at minibatch 1, where it measured 2.15 s of influence
against 85.6 s of optimisation per round (0.025).
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import torch
from torch import Tensor, nn

from iif_ray.attribution.sequence import SequenceBatch, sequence_losses, value_losses
from iif_ray.experiments.threads import torch_threads
from iif_ray.lm import detox
from iif_ray.lm.advantages import advantages, validation_weights
from iif_ray.lm.detox import Language
from iif_ray.lm.generation import response_texts, sample_records
from iif_ray.lm.learner import (
    LMLearner,
    LMPolicy,
    UpdateSettings,
    ValueTargets,
    clip_fractions,
)
from iif_ray.lm.models import load_policy, tiny_llama, with_lora, word_tokenizer
from iif_ray.lm.spec import LMRunSpec

# The parts of one update step, as update_parts times them; "rest" is what no timer covers.
UPDATE_PARTS = ("select rows", "forward", "loss", "backward", "clip grad norm",
                "optimizer step", "metric reads", "rest of the loop")


def _model(model_dir: str | None):
    if model_dir:
        return load_policy(model_dir)
    lang = Language.build(0)
    tok = word_tokenizer(lang.clean + lang.insults)
    return tiny_llama(len(tok)), tok


def bench_lm(model_dir: str | None = None, *, sequences: int = 256,
             minibatches: Sequence[int] = (1, 32), epochs: int = 4,
             methods: Sequence[str] = ("ghost", "jvp"), reps: int = 2,
             echo: Callable[[str], None] = print) -> dict[str, float]:
    """Print the parts of a round and return ``{f"{method}/mb{m}": scoring_s / update_s}``.

    Runs in one thread, like a learner actor; the caller's thread count is restored after.
    """
    with torch_threads(1):
        return _bench(model_dir, sequences, minibatches, epochs, methods, reps, echo)


def _median_s(fn: Callable[[], object], reps: int) -> float:
    """Median seconds of ``reps`` calls after one warm-up call (lazy loads, first-call
    allocations)."""
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _bench(model_dir, sequences, minibatches, epochs, methods, reps, echo) -> dict[str, float]:
    model, tok = _model(model_dir)
    policy = LMPolicy(with_lora(model, rank=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():  # a trained-looking adapter, so scores are not all zero
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    lang = Language.build(0)
    spec = LMRunSpec(model="-", out_dir="-", group_size=1)
    learner = LMLearner(policy, UpdateSettings())
    prompts = lang.prompts(sequences, split="train", seed=5)
    val_prompts = lang.prompts(64, split="train", seed=6)

    def generate(p: list[str], seed: int) -> tuple[SequenceBatch, list[str]]:
        b = sample_records(policy.model, tok, p, spec.sampling, seed=seed)
        return b, response_texts(tok, b)

    def rewarded(texts: list[str]) -> Tensor:
        return torch.as_tensor(detox.reward(texts), dtype=torch.float32)

    batch, texts = generate(prompts, 0)
    rewards = rewarded(texts)
    full, targets, _ = advantages(spec, batch, rewards, learner.prepare(batch), 0.05)

    def validation() -> tuple[SequenceBatch, Tensor]:
        val, val_texts = generate(val_prompts, 1)
        return val, validation_weights(spec, val, rewarded(val_texts), learner.prepare(val),
                                       0.05)

    val, weights = validation()
    tokens = int(batch.response_mask.sum())
    echo(f"LM bench: {sequences} sequences ({tokens} response tokens, width "
         f"{batch.input_ids.shape[1]}), {sum(p.numel() for p in policy.parameters()):,} "
         f"parameters, LoRA r=8 on q,v; {epochs} epochs; one thread")
    echo(f"seconds per round on the CPU, median of {reps} after a warm-up (updates: one run "
         "each)")
    parts = {
        "generation": _median_s(lambda: generate(prompts, 0), reps),
        "reward": _median_s(lambda: rewarded(texts), reps),
        "prepare": _median_s(lambda: advantages(spec, batch, rewards, learner.prepare(batch),
                                                0.05), reps),
        "validation": _median_s(validation, reps),
    }
    echo(f"  generation: {parts['generation']:.3f} s ({sequences} responses, at most "
         f"{spec.sampling.max_new_tokens} new tokens)")
    echo(f"  reward: {parts['reward']:.3f} s (detox-mini's classifier)")
    echo(f"  prepare: {parts['prepare']:.3f} s (old and reference log-probs, values, "
         "advantages)")
    echo(f"  validation: {parts['validation']:.3f} s ({len(val_prompts)} responses: "
         "generation, reward, prepare)")
    scoring = {m: _median_s(lambda m=m: learner.scores(full, val, weights, m), reps)
               for m in methods}
    for m, s in scoring.items():
        echo(f"  scoring ({m}): {s:.3f} s per round")
    update: dict[int, float] = {}
    split: dict[int, dict[str, float]] = {}
    for mb in minibatches:
        settings = replace(UpdateSettings(), epochs=epochs, minibatch_size=mb)
        kept = torch.arange(sequences - sequences % mb)
        update[mb] = LMLearner(copy.deepcopy(policy), settings).update(
            full, kept, targets)["update_s"]
        echo(f"  update (minibatch {mb}): {update[mb]:.2f} s per round "
             f"({epochs * len(kept) // mb} steps)")
        split[mb] = update_parts(LMLearner(copy.deepcopy(policy), settings), full, kept,
                                 targets)
    method = spec.scoring_method if spec.scoring_method in methods else methods[0]
    _round_table(parts | {f"scoring ({method})": scoring[method]}, update, echo)
    _update_table(split, epochs, sequences, echo)
    ratios = {}
    for m in methods:
        for mb in minibatches:
            ratios[f"{m}/mb{mb}"] = scoring[m] / update[mb]
            echo(f"scoring/update lm {m} minibatch {mb}: {ratios[f'{m}/mb{mb}']:.4f}")
    return ratios


def _table(title: str, rows: dict[str, dict[int, float]], echo: Callable[[str], None]) -> None:
    """Seconds and share of the last row (the whole) per minibatch size, one row per part."""
    whole = rows[list(rows)[-1]]
    echo(title)
    echo(f"  {'part':<18}" + "".join(f"{f'mb {mb}: s':>12} {'share':>6}" for mb in whole))
    for name, by_mb in rows.items():
        echo(f"  {name:<18}" + "".join(f"{by_mb[mb]:>12.3f} {by_mb[mb] / whole[mb]:>6.1%}"
                                       for mb in whole))


def _round_table(parts: dict[str, float], update: dict[int, float],
                 echo: Callable[[str], None]) -> None:
    rows = {name: dict.fromkeys(update, s) for name, s in parts.items()}
    rows["update"] = dict(update)
    rows["round"] = {mb: sum(parts.values()) + u for mb, u in update.items()}
    _table("one round, by part (the update at each minibatch size):", rows, echo)


def _update_table(split: dict[int, dict[str, float]], epochs: int, sequences: int,
                  echo: Callable[[str], None]) -> None:
    _table("the update, by part (an instrumented copy of its loop, one run):",
           {name: {mb: t[name] for mb, t in split.items()} for name in (*UPDATE_PARTS, "total")},
           echo)
    echo(f"  {'ms per step':<18}" + "".join(
        f"{1e3 * t['total'] * mb / (epochs * (sequences - sequences % mb)):>12.2f}       "
        for mb, t in split.items()).rstrip())


def update_parts(learner: LMLearner, batch: SequenceBatch, kept: Tensor,
                 value_targets: ValueTargets | None = None) -> dict[str, float]:
    """:meth:`LMLearner.update`'s loop with a timer around each part: seconds per part
    (:data:`UPDATE_PARTS`) and ``total``. Same steps in the same order, so the weights it
    leaves are the production loop's (``tests/lm/test_lm_bench.py`` holds it to that).

    Per epoch, gathering its rows and reading its minibatches' denominators count as
    "select rows", its clip fractions as "metric reads", as does the one read at the end.
    """
    s = learner.settings
    clock = time.perf_counter
    t = dict.fromkeys(UPDATE_PARTS, 0.0)
    t_start = clock()
    loss_spec = s.policy_loss()
    ppo = value_targets is not None and s.estimator == "ppo"
    losses: dict[str, list[Tensor]] = {"policy": [], "value": [], "clip": []}
    size = s.minibatch_size
    for _ in range(s.epochs):
        t0 = clock()
        order = kept[torch.randperm(len(kept), generator=learner.generator)]
        rows = batch.select(order)
        if ppo:
            vt = value_targets.select(order)
            rows = replace(rows, old_values=vt.values, returns=vt.returns)
        specs = loss_spec.for_minibatches(rows, size)
        t["select rows"] += clock() - t0
        epoch_logp = []
        for i, step_spec in enumerate(specs):
            t0 = clock()
            sub = rows.select(slice(i * size, (i + 1) * size))
            t1 = clock()
            logp, values = learner.policy.logp_and_values(sub)
            t2 = clock()
            pg = sequence_losses(logp, sub, step_spec).sum()
            loss = pg
            if ppo:
                vf = value_losses(values, sub, step_spec).sum()
                loss = loss + s.vf_coef * vf
                losses["value"].append(vf.detach())
            t3 = clock()
            learner.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            t4 = clock()
            if s.max_grad_norm:
                nn.utils.clip_grad_norm_(learner.trainable, s.max_grad_norm)
            t5 = clock()
            learner.optimizer.step()
            t6 = clock()
            losses["policy"].append(pg.detach())
            epoch_logp.append(logp.detach())
            t7 = clock()
            marks = (t0, t1, t2, t3, t4, t5, t6, t7)
            for name, a, b in zip(UPDATE_PARTS[:-1], marks[:-1], marks[1:], strict=True):
                t[name] += b - a
        t0 = clock()
        if epoch_logp:
            losses["clip"].append(clip_fractions(torch.cat(epoch_logp), rows, size, s.clip))
        t["metric reads"] += clock() - t0
    t0 = clock()
    for parts in losses.values():
        if parts:
            sum(torch.cat([p.reshape(-1) for p in parts]).tolist())
    t["metric reads"] += clock() - t0
    t["total"] = clock() - t_start
    t["rest of the loop"] = t["total"] - sum(t[name] for name in UPDATE_PARTS[:-1])
    return t
