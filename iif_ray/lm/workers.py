"""The LM engine's actor bodies (as veRL's ``workers/``): rollout, reward and learner.

The driver (:mod:`.trainer`) makes Ray actors of them; their methods take and return CPU
tensors, so the driver never cares where an actor computes. Scorer actors share the classic
engine's body, :class:`iif_ray.scoring.pool.ScorerWorker`, built from :func:`scoring_model`.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch

from iif_ray.attribution.sequence import SequenceBatch
from iif_ray.lm import arith, detox
from iif_ray.lm.generation import answer_probability, response_texts, sample_records
from iif_ray.lm.learner import LMLearner, LMPolicy, ValueTargets
from iif_ray.lm.models import load_policy, with_lora
from iif_ray.lm.spec import DTYPES, LMRunSpec


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


def policy_model(spec: LMRunSpec, device: str = "cpu") -> tuple[Any, Any]:
    model, tokenizer = load_policy(spec.model, dtype=DTYPES[spec.dtype])
    model = with_lora(model, rank=spec.lora_rank, target_modules=list(spec.lora_targets))
    return model.to(device), tokenizer


def scoring_model(spec: LMRunSpec, device: str) -> Any:
    """A scorer actor's replica of the LoRA policy (its adapters are set every round): what
    :class:`iif_ray.scoring.pool.ScorerWorker` builds for the LM engine."""
    torch.set_num_threads(1)
    return policy_model(spec, device)[0]


class RolloutWorker:
    """Actor body: generates responses with Hugging Face ``generate`` (CPU or GPU)."""

    def __init__(self, spec: LMRunSpec) -> None:
        torch.set_num_threads(1)
        self.spec = spec
        self.device = device_for(spec.rollout_gpus)
        self.model, self.tokenizer = policy_model(spec, self.device)
        self.model.eval()

    def set_weights(self, weights: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(weights, strict=False)

    def generate(self, prompts: list[str], seed: int, *, greedy: bool = False,
                 reference: bool = False) -> tuple[SequenceBatch, list[str]]:
        """Responses from the current policy, or (``reference``) from the reference policy:
        the same model with its adapters off; ``greedy`` for an exact evaluation."""
        with self.model.disable_adapter() if reference else contextlib.nullcontext():
            batch = sample_records(self.model, self.tokenizer, prompts, self.spec.sampling,
                                   seed, greedy=greedy).to("cpu")
        # arith's checker sees special tokens too: "1<pad>2<eos>" is not "12<eos>".
        return batch, response_texts(self.tokenizer, batch,
                                     skip_special_tokens=self.spec.task != "arith")

    def answer_probability(self, prompts: list[str], answers: list[str]) -> np.ndarray:
        """Each prompt's probability, under the current policy's own distribution, of
        answering exactly ``answers`` (teacher-forced: the product of the answer's token
        probabilities, EOS included): the policy's exact accuracy without sampling noise."""
        return answer_probability(self.model, self.tokenizer, prompts, answers)


class RewardWorker:
    """Actor body: the reward (detox-mini's classifier, ``spec.reward``'s local one, or
    arith's exact checker) and detox's held-out detector (VADER, whatever the reward)."""

    def __init__(self, spec: LMRunSpec) -> None:
        torch.set_num_threads(1)
        self.task = spec.task
        self._reward = detox.reward
        if spec.reward:
            from iif_ray.lm.rewards import ClassifierReward

            self._reward = ClassifierReward(spec.reward, spec.reward_label)

    def score(self, texts: list[str], prompts: list[str]) -> np.ndarray:
        """Each response's reward; only arith's checker reads the prompts."""
        if self.task == "arith":
            return arith.reward(prompts, texts).astype(np.float32)
        return np.asarray(self._reward(texts), dtype=np.float32)

    def evaluate(self, texts: list[str], prompts: list[str]) -> dict[str, float]:
        """The held-out reading: arith's exact accuracy, or detox's detector and reward."""
        reward = float(np.mean(self.score(texts, prompts)))
        if self.task == "arith":
            return {"reward": reward}
        return {**detox.toxicity(texts), "reward": reward}


class LearnerWorker:
    """Actor body: the LoRA policy with its value head, scoring and updates."""

    def __init__(self, spec: LMRunSpec) -> None:
        torch.set_num_threads(1)
        torch.manual_seed(spec.seed)  # the value head's initialisation, on CPU (any device)
        self.device = device_for(spec.learner_gpus)
        model, _ = policy_model(spec, self.device)
        self.learner = LMLearner(LMPolicy(model).to(self.device), spec.update, seed=spec.seed)

    # Everything comes in on CPU (the driver's batches) and goes back on CPU.
    def adapter_weights(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().cpu().clone()
                for n, p in self.learner.policy.model.named_parameters() if p.requires_grad}

    def value_head_weights(self) -> dict[str, torch.Tensor]:
        """The value head's weight and bias: scorer actors need them for the value term of
        each record's loss."""
        return to_cpu(self.learner.policy.value_head.state_dict())

    def prepare(self, batch: SequenceBatch, ref_logp: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, ...]:
        ref = None if ref_logp is None else ref_logp.to(self.device)
        return to_cpu(self.learner.prepare(batch.to(self.device), ref))

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
