"""The LM engine's run spec: what one language-model run trains and where its actors run.

It is what ``run.json`` holds for an LM run (kind ``"lm"``, :mod:`iif_ray.run`); a spec
written before a field existed loads with that field's default.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from iif_ray.attribution.selection import SELECTION_RULES
from iif_ray.lm import GROUP_FILTER_ALGOS, LM_ALGOS, LM_TASKS, arith
from iif_ray.lm.generation import SamplingSettings
from iif_ray.lm.learner import UpdateSettings
from iif_ray.options import FRACTION, Accepts, above, at_least, check_options, option
from iif_ray.run import LM, RUN_SPEC, read_run_spec

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# Each algorithm's selection rule when the spec names none (what runs did before it could).
ALGO_SELECTION = {"iif": "neg-bottom", "random": "random", "group-filter+iif": "neg-bottom"}
# The random control's rule for each rule it is the control of (same count, random rows).
RANDOM_CONTROL = {"neg-bottom": "random", "negative": "neg-random"}
VALIDATION_SOURCES = ("fresh", "reference", "policy")


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
                            "ppo drops none; group-filter drops the prompt groups whose "
                            "rewards do not vary (DAPO's dynamic sampling), group-filter+iif "
                            "then filters the rest by influence")
    rounds: int = option(100, accepts=at_least(1), help="training rounds")
    prompts_per_round: int = option(64, accepts=at_least(1), help="prompts sampled per round")
    group_size: int = option(4, accepts=at_least(1), help="responses per prompt")
    validation_prompts: int = option(64, accepts=at_least(1),
                                     help="validation responses the influence target is "
                                          "built from (the paper: 1,024)")
    target_whiten_chunk: int = option(
        0, accepts=at_least(0),
        help="whiten the validation responses' token advantages (seq-return target) over "
             "each this many consecutive responses (the paper's code: 64, the batches it "
             "generates them in), or over all of them (0)")
    validation: str = option(
        "fresh", choices=VALIDATION_SOURCES,
        help="fresh: new prompts and responses from the current policy every round; "
             "reference: a fixed set of held-out prompts, responses from the reference "
             "policy generated once (the paper's f^seq; per round only their forward and "
             "backward passes); policy: the fixed prompts, responses from the current "
             "policy every round (adds their generation and reward each round)")
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
                              help="KL the adaptive controller steers toward (ppo), per token "
                                   "or per sequence (--kl-per)")
    kl_per: str = option("token", choices=("token", "sequence"),
                         help="the unit of --kl-target: the mean KL per response token, or "
                              "per response (summed over its tokens: TRL's and the paper's)")
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

    # The preset a new run started from (``train-lm --preset``), recorded for the reader;
    # every value it set is in the fields above.
    preset: str | None = None

    def __post_init__(self) -> None:
        check_options(self)
        check_task(self)
        if self.algo in ("ppo", "group-filter") and self.selection is not None:
            raise ValueError(f"algo {self.algo!r} does not filter by score: it takes no "
                             f"selection rule, got {self.selection!r}")
        if self.algo == "random" and self.selection_rule not in RANDOM_CONTROL.values():
            raise ValueError(f"the random control drops at random: algo 'random' takes "
                             f"selection 'random' or 'neg-random', got {self.selection!r}")
        if self.algo in GROUP_FILTER_ALGOS and self.group_size < 2:
            raise ValueError(f"algo {self.algo!r} drops prompt groups whose rewards do not "
                             f"vary: it needs group_size >= 2, got {self.group_size}")
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

    def with_algo(self, algo: str) -> LMRunSpec:
        """This run with ``algo`` (a sweep's arms share one base spec): the selection rule
        the preset gives ``algo`` when the spec came from one; else ppo and group-filter
        none, the random control the control of IIF's rule (``neg-random`` for
        ``negative``), and the IIF algos the base's rule."""
        if self.preset:
            rule = LM_PRESETS[self.preset].get("selection", {}).get(algo)
        else:
            iif_rule = self.selection
            if self.algo == "random":  # the rule this random control is the control of
                iif_rule = {v: k for k, v in RANDOM_CONTROL.items()}.get(self.selection_rule)
            rule = iif_rule
            if algo in ("ppo", "group-filter"):
                rule = None
            elif algo == "random":
                rule = RANDOM_CONTROL.get(iif_rule or "neg-bottom", "random")
        return replace(self, algo=algo, selection=rule)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "update": asdict(self.update), "sampling": asdict(self.sampling),
                "lora_targets": list(self.lora_targets)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LMRunSpec:
        """The spec ``to_dict`` wrote; fields added since (``selection``) take defaults."""
        return cls(**{**d, "update": UpdateSettings(**d["update"]),
                      "sampling": SamplingSettings(**d["sampling"]),
                      "lora_targets": tuple(d["lora_targets"])})


# The paper's RLHF recipe (Hu et al. 2025, App. A.3, and its code, TRL's PPO): 256 sequences a
# round (one per prompt), minibatch 1, 4 epochs, Adam 1e-5, clip 0.2, value loss 0.1 x clipped
# (0.2), no gradient clipping (TRL's default), adaptive KL from 0.04 toward 6 nats per
# sequence (TRL's target; horizon 10,000), the target f^seq on 1,024 fixed held-out prompts
# with reference-policy responses (their advantages whitened in chunks of 64, as the code
# generates them), and IIF keeping the records of score > 0 (its code drops every negative
# one). Model-size settings (LoRA rank, response length) stay the task's.
LM_PRESETS: dict[str, dict[str, Any]] = {
    "paper-rlhf": {
        "prompts_per_round": 256, "group_size": 1,
        "validation_prompts": 1024, "validation": "reference", "target_whiten_chunk": 64,
        "kl_beta": 0.04, "kl_target": 6.0, "kl_per": "sequence",
        "update": {"estimator": "ppo", "minibatch_size": 1, "epochs": 4, "lr": 1e-5,
                   "clip": 0.2, "vf_coef": 0.1, "vf_clip": 0.2, "max_grad_norm": 0.0},
        # Each algo's selection rule; the random control drops as many rows as IIF would.
        "selection": {"iif": "negative", "group-filter+iif": "negative",
                      "random": "neg-random"},
    },
}


def preset_fields(name: str, algo: str) -> dict[str, Any]:
    """The spec fields preset ``name`` sets for ``algo`` (``update``: a dict of
    :class:`UpdateSettings` fields); a new run's explicit settings override them.

    Raises:
        ValueError: an unknown preset.
    """
    if name not in LM_PRESETS:
        raise ValueError(f"unknown preset {name!r}; accepted: {sorted(LM_PRESETS)}")
    fields = {k: v for k, v in LM_PRESETS[name].items() if k != "selection"}
    selection = LM_PRESETS[name].get("selection", {}).get(algo)
    return {**fields, "update": dict(fields.get("update", {})), "preset": name,
            **({"selection": selection} if selection else {})}


# Each task's own defaults for what the command line leaves out (the run spec's are
# detox-mini's); the nested "update" and "sampling" dicts set those settings' fields.
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "detox": {},
    # GRPO over groups of 8 (a 0/1 reward needs several answers per problem to have a
    # spread); 32 problems x 8 = 256 sequences a round, as detox-mini's 64 x 4; responses
    # only as long as the longest answer; the whole held-out set at every evaluation. Adam
    # 3e-4 for 2 epochs: measured on the pre-trained model, seed 0, clean rewards, it
    # raised held-out accuracy (0.477 -> 0.62 in 10 rounds) as fast as 1e-3 for 4 epochs
    # (0.619) at a third of the KL (0.08 vs 0.18 per token) and half the update time.
    "arith": {"prompts_per_round": 32, "group_size": 8, "eval_prompts": arith.HELD_OUT,
              "update": {"estimator": "grpo", "lr": 3e-4, "epochs": 2},
              "sampling": {"max_new_tokens": arith.ANSWER_TOKENS}},
}


def check_task(spec: LMRunSpec) -> None:
    """The task's own rules on a spec (called by the spec's checks).

    Raises:
        ValueError: a combination the task cannot run; the message names the fields.
    """
    if spec.task != "arith":
        if spec.reward_noise:
            raise ValueError(f"reward_noise {spec.reward_noise:g} needs task 'arith' (a 0/1 "
                             f"reward to flip); task {spec.task!r} takes 0")
        return
    if spec.reward or spec.prompts:
        raise ValueError("task 'arith' has its own problems and exact checker: it takes no "
                         "reward classifier or prompt file")
    if spec.eval_prompts > arith.HELD_OUT:
        raise ValueError(f"eval_prompts {spec.eval_prompts} is more than arith's held-out "
                         f"problems; accepted: 1 to {arith.HELD_OUT}")
    if spec.sampling.max_new_tokens < arith.ANSWER_TOKENS:
        raise ValueError(f"max_new_tokens {spec.sampling.max_new_tokens} cannot hold arith's "
                         f"longest answer and its EOS; accepted: >= {arith.ANSWER_TOKENS}")


def task_spec(task: str, model: str, out_dir: str, *, update: dict[str, Any] | None = None,
              sampling: dict[str, Any] | None = None, **fields: Any) -> LMRunSpec:
    """A run spec of ``task``: ``fields``, ``update`` and ``sampling`` over the task's
    defaults (:data:`iif_ray.lm.spec.TASK_DEFAULTS`), over the dataclasses' own. What
    ``train-lm --task`` builds, and what a sweep of the task should.

    Raises:
        KeyError: an unknown task.
        ValueError: a combination the spec refuses.
    """
    defaults = TASK_DEFAULTS[task]
    top = {k: v for k, v in defaults.items() if k not in ("update", "sampling")}
    return LMRunSpec(model=model, out_dir=out_dir, task=task, **{**top, **fields},
                     update=UpdateSettings(**{**defaults.get("update", {}), **(update or {})}),
                     sampling=SamplingSettings(**{**defaults.get("sampling", {}),
                                                  **(sampling or {})}))


def read_spec(run_dir: str | Path) -> LMRunSpec:
    """The spec an LM run directory was started with (a legacy one is migrated first).

    Raises:
        FileNotFoundError: ``run_dir`` holds no run.
        iif_ray.run.RunKindError: it holds a classic run.
        ValueError: its run.json is cut short or lacks fields.
    """
    stored = read_run_spec(run_dir, LM)
    try:
        return LMRunSpec.from_dict(stored)
    except (KeyError, TypeError) as e:  # a field missing, or one this version does not know
        raise ValueError(f"{str(Path(run_dir) / RUN_SPEC)!r} is not an LM run spec ({e!r}); "
                         "accepted: the run.json an iif-ray train-lm run wrote") from None
