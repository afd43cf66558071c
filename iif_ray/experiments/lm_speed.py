"""``iif-ray bench lm``: scoring seconds against update seconds for the language-model path.

One round's worth of sequences is sampled from the policy, prepared and given advantages as
in training; then, in one process and one thread (a learner actor's setting), influence
scoring (every method) and the PPO update (every minibatch size, the same epochs) are timed
on the *same* batch. The paper's RLHF settings are 4 epochs at minibatch 1, where it measured
2.15 s of influence against 85.6 s of optimisation per round (0.025).
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import torch

from iif_ray.experiments.threads import torch_threads
from iif_ray.lm.advantages import advantages, validation_weights
from iif_ray.lm.detox import Language
from iif_ray.lm.generation import SamplingSettings, sample_records
from iif_ray.lm.learner import LMLearner, LMPolicy, UpdateSettings
from iif_ray.lm.models import load_policy, tiny_llama, with_lora, word_tokenizer
from iif_ray.lm.spec import LMRunSpec


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
    """Print and return ``{f"{method}/mb{m}": scoring_s / update_s}``.

    Runs in one thread, like a learner actor; the caller's thread count is restored after.
    """
    with torch_threads(1):
        return _bench(model_dir, sequences, minibatches, epochs, methods, reps, echo)


def _bench(model_dir, sequences, minibatches, epochs, methods, reps, echo) -> dict[str, float]:
    model, tok = _model(model_dir)
    policy = LMPolicy(with_lora(model, rank=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():  # a trained-looking adapter, so scores are not all zero
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    lang = Language.build(0)
    prompts = lang.prompts(sequences, split="train", seed=5)
    batch = sample_records(policy.model, tok, prompts, SamplingSettings(), seed=0)
    val = sample_records(policy.model, tok, lang.prompts(64, split="train", seed=6),
                         SamplingSettings(), seed=1)
    spec = LMRunSpec(model="-", out_dir="-", group_size=1)
    learner = LMLearner(policy, UpdateSettings())
    rewards = torch.rand(sequences)
    full, targets, _ = advantages(spec, batch, rewards, learner.prepare(batch), 0.05)
    weights = validation_weights(spec, val, torch.rand(64), learner.prepare(val), 0.05)
    tokens = int(batch.response_mask.sum())
    echo(f"LM bench: {sequences} sequences ({tokens} response tokens, width "
         f"{batch.input_ids.shape[1]}), {sum(p.numel() for p in policy.parameters()):,} "
         f"parameters, LoRA r=8 on q,v; {epochs} epochs; one thread")
    scoring: dict[str, float] = {}
    for method in methods:
        learner.scores(full, val, weights, method)  # warm-up
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            learner.scores(full, val, weights, method)
            times.append(time.perf_counter() - t0)
        scoring[method] = statistics.median(times)
        echo(f"  scoring ({method}): {scoring[method]:.3f} s per round")
    update: dict[int, float] = {}
    for mb in minibatches:
        trial = LMLearner(copy.deepcopy(policy),
                          replace(UpdateSettings(), epochs=epochs, minibatch_size=mb))
        kept = torch.arange(sequences - sequences % mb)
        update[mb] = trial.update(full, kept, targets)["update_s"]
        echo(f"  update (minibatch {mb}): {update[mb]:.2f} s per round "
             f"({epochs * len(kept) // mb} steps)")
    ratios = {}
    for method in methods:
        for mb in minibatches:
            ratios[f"{method}/mb{mb}"] = scoring[method] / update[mb]
            echo(f"scoring/update lm {method} minibatch {mb}: "
                 f"{ratios[f'{method}/mb{mb}']:.4f}")
    return ratios
