"""The LM engine's run spec: what one language-model run trains and where its actors run.

It is what ``run.json`` holds for an LM run (kind ``"lm"``, :mod:`iif_ray.run`); a spec
written before a field existed loads with that field's default.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from iif_ray.attribution.selection import check_drop_fraction, check_rule
from iif_ray.lm import LM_ALGOS
from iif_ray.lm.generation import SamplingSettings
from iif_ray.lm.learner import UpdateSettings
from iif_ray.run import LM, read_run_spec

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# Each algorithm's selection rule when the spec names none (what runs did before it could).
ALGO_SELECTION = {"iif": "neg-bottom", "random": "random"}


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
    # The selection rule (iif_ray.attribution.selection.SELECTION_RULES); None: the algo's
    # own (selection_rule), so replace(spec, algo=...) keeps meaning what it says.
    selection: str | None = None
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
        check_drop_fraction(self.drop_fraction)
        check_rule(self.selection_rule)
        if self.algo == "random" and self.selection_rule != "random":
            raise ValueError(f"the random control drops at random: algo 'random' takes "
                             f"selection 'random', got {self.selection!r}")
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

    @property
    def selection_rule(self) -> str:
        """The rule a round selects with: ``selection``, else the algo's own ("neg-bottom"
        for iif, the paper's; "random" for the random control; ppo selects nothing)."""
        return self.selection or ALGO_SELECTION.get(self.algo, "neg-bottom")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "update": asdict(self.update), "sampling": asdict(self.sampling),
                "lora_targets": list(self.lora_targets)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LMRunSpec:
        """The spec ``to_dict`` wrote; fields added since (``selection``) take defaults."""
        return cls(**{**d, "update": UpdateSettings(**d["update"]),
                      "sampling": SamplingSettings(**d["sampling"]),
                      "lora_targets": tuple(d["lora_targets"])})


def read_spec(run_dir: str | Path) -> LMRunSpec:
    """The spec an LM run directory was started with (a legacy one is migrated first).

    Raises:
        FileNotFoundError: ``run_dir`` holds no run.
        iif_ray.run.RunKindError: it holds a classic run.
    """
    return LMRunSpec.from_dict(read_run_spec(run_dir, LM))
