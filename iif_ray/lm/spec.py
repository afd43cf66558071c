"""The LM engine's run spec: what one language-model run trains and where its actors run.

It is what ``run.json`` holds for an LM run (kind ``"lm"``, :mod:`iif_ray.run`); a spec
written before a field existed loads with that field's default.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from iif_ray.attribution.selection import SELECTION_RULES
from iif_ray.lm import LM_ALGOS, LM_TASKS
from iif_ray.lm.generation import SamplingSettings
from iif_ray.lm.learner import UpdateSettings
from iif_ray.lm.tasks import check_task
from iif_ray.options import FRACTION, Accepts, above, at_least, check_options, option
from iif_ray.run import LM, read_run_spec

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# Each algorithm's selection rule when the spec names none (what runs did before it could).
ALGO_SELECTION = {"iif": "neg-bottom", "random": "random"}


# Ray's rule for a GPU reservation: a fraction of one GPU, or whole GPUs.
GPUS = Accepts(lambda v: 0 <= v <= 1 or v == int(v) > 1,
               "in [0, 1] or a whole number of GPUs (Ray's rule)")
# Beyond half the rewards flipped, a flipped reward is the likelier one.
NOISE = Accepts(lambda v: 0 <= v <= 0.5, "in [0, 0.5]")
# Fields a resumed run may change: where its actors run, not what it trains.
PLACEMENT = ("rollout_gpus", "learner_gpus", "gpus_per_scorer", "scorer_timeout_s")


@dataclass(frozen=True)
class LMRunSpec:
    """One LM run. ``model``: a local Hugging Face causal-LM directory with its tokenizer.

    Each user-facing field is declared with :func:`~iif_ray.options.option`: ``iif-ray
    train-lm`` generates its flags from these declarations (and from :class:`UpdateSettings`
    and :class:`SamplingSettings`), and the spec checks the same ones, so a range is written
    once.
    """

    model: str
    out_dir: str
    algo: str = option("iif", choices=LM_ALGOS,
                       help="iif filters by influence; random drops as many rows at random; "
                            "ppo drops none")
    rounds: int = option(100, accepts=at_least(1), help="training rounds")
    prompts_per_round: int = option(64, accepts=at_least(1), help="prompts sampled per round")
    group_size: int = option(4, accepts=at_least(1), help="responses per prompt")
    validation_prompts: int = option(64, accepts=at_least(1),
                                     help="fresh validation responses per round that the "
                                          "influence target is built from")
    drop_fraction: float = option(0.5, accepts=FRACTION,
                                  help="p of the selection rule (neg-bottom: the share of "
                                       "negative-scored rows dropped)")
    # None: the algo's own rule (selection_rule), so replace(spec, algo=...) keeps meaning
    # what it says.
    selection: str | None = option(None, choices=SELECTION_RULES,
                                   help="which rows --algo iif drops, given their scores "
                                        "(default neg-bottom, the paper's; negative drops "
                                        "every negative-scored one and ignores "
                                        "--drop-fraction)")
    target: str = "seq-return"
    scoring_method: str = option("ghost", choices=("ghost", "jvp"),
                                 help="ghost: the paper's LoRA inner products; jvp: "
                                      "forward-mode")
    lora_rank: int = option(8, accepts=at_least(1), help="LoRA rank of the adapters")
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    update: UpdateSettings = field(default_factory=UpdateSettings)
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    kl_beta: float = option(0.05, accepts=at_least(0),
                            help="initial KL coefficient of the reward penalty (ppo)")
    kl_target: float = option(1.0, accepts=above(0),
                              help="per-token KL the adaptive controller steers toward (ppo)")
    # Evaluations and checkpoints also come after the last round.
    eval_every: int = option(5, accepts=at_least(1), help="rounds between held-out evaluations")
    eval_prompts: int = option(128, accepts=at_least(1), help="held-out prompts per evaluation")
    checkpoint_every: int = option(5, accepts=at_least(1), help="rounds between checkpoints")
    num_scorers: int = option(0, accepts=at_least(0),
                              help="scorer actors (0: the learner scores the records itself)")
    cpus_per_scorer: float = option(1.0, accepts=at_least(0), help="CPUs per scorer actor")
    # CPUs the rollout and learner actors reserve. They never compute at the same time (the
    # driver waits on each), so a Tune trial can give the rollout actor less.
    rollout_cpus: float = option(1.0, accepts=at_least(0), help="CPUs the rollout actor "
                                                                "reserves")
    learner_cpus: float = option(1.0, accepts=at_least(0), help="CPUs the learner actor "
                                                                "reserves")
    # GPUs each actor reserves (fractions share one); an actor with any computes on "cuda".
    rollout_gpus: float = option(0.0, accepts=GPUS, flag="--num-gpus-per-rollout",
                                 help="GPUs the rollout actor reserves (fractions share one); "
                                      "an actor with any computes on it; may change on "
                                      "--resume")
    learner_gpus: float = option(0.0, accepts=GPUS, flag="--num-gpus-per-learner",
                                 help="GPUs the learner actor reserves; may change on --resume")
    gpus_per_scorer: float = option(0.0, accepts=GPUS, flag="--num-gpus-per-scorer",
                                    help="GPUs each scorer actor reserves; may change on "
                                         "--resume")
    # Large models scoring on CPU need it long.
    scorer_timeout_s: float = option(1800.0, accepts=above(0), flag="--scorer-timeout",
                                     help="seconds a scorer actor may take on its shard before "
                                          "it is replaced and the shard re-scored (three "
                                          "tries); may change on --resume")
    # The LoRA adapters, the value head, log-probabilities and scores stay float32 (peft and
    # the code upcast) whatever the base weights are.
    dtype: str = option("float32", choices=tuple(DTYPES),
                        help="the base model's weights (bfloat16 halves a GPU's memory for "
                             "them; adapters, log-probabilities and scores stay float32)")
    seed: int = option(0, accepts=at_least(0), help="the run's seed")
    reward: str | None = option(
        None, metavar="DIR",
        help="local text-classifier directory for the reward (default: detox-mini's "
             "classifier)")
    reward_label: str | None = option(
        None, metavar="LABEL",
        help="the classifier label whose probability is the reward (default: label 0)")
    prompts: str | None = option(
        None, metavar="FILE",
        help="local prompt file: .jsonl with a 'prompt' field (a string, or {'text': ...} as "
             "real-toxicity-prompts ships), .parquet with a 'prompt' column, or .txt, one per "
             "line (default: detox-mini's prompts)")

    # --- the task (iif_ray.lm.tasks): its prompts, reward, corruption and evaluation ---
    task: str = option("detox", choices=LM_TASKS,
                       help="detox: detox-mini (or --reward/--prompts); arith: digit addition "
                            "with an exact 0/1 reward, greedy held-out accuracy as "
                            "eval_reward")
    reward_noise: float = option(0.0, accepts=NOISE,
                                 help="share of each round's rewards flipped (arith: 1 <-> "
                                      "0), chosen by (seed, round); the ledger's corrupted "
                                      "column marks them")
    # --- end of the task ---

    def __post_init__(self) -> None:
        check_options(self)
        check_task(self)
        if self.algo == "ppo" and self.selection is not None:
            raise ValueError(f"algo 'ppo' drops nothing: it takes no selection rule, got "
                             f"{self.selection!r}")
        if self.algo == "random" and self.selection_rule != "random":
            raise ValueError(f"the random control drops at random: algo 'random' takes "
                             f"selection 'random', got {self.selection!r}")
        if self.update.estimator == "grpo" and self.group_size < 2:
            raise ValueError("estimator grpo needs group_size >= 2 (its advantages are "
                             f"relative to the group), got {self.group_size}")
        batch = self.prompts_per_round * self.group_size
        if self.update.minibatch_size > batch:
            raise ValueError(f"minibatch_size {self.update.minibatch_size} is larger than a "
                             f"round's {batch} sequences (prompts_per_round x group_size); "
                             f"accepted: 1 to {batch}")

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
