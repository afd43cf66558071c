"""``iif-ray train-lm``: IIF (or PPO, or the random control) for a language-model policy.

The default task is detox-mini (``iif_ray.lm.detox``); ``--model`` points at any local
Hugging Face causal-LM directory instead of the project's pre-trained tiny model.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from iif_ray.attribution.selection import SELECTION_RULES
from iif_ray.cli.base import Command
from iif_ray.cli.common import (
    UsageError,
    check_local_gpus,
    console,
    drop_fraction,
    int_at_least,
    nonneg_float,
    positive_float,
    prepare_out,
)
from iif_ray.lm import LM_ALGOS

# Placement flag -> LMRunSpec field.
PLACEMENT = {"num_gpus_per_rollout": "rollout_gpus", "num_gpus_per_learner": "learner_gpus",
             "num_gpus_per_scorer": "gpus_per_scorer", "scorer_timeout": "scorer_timeout_s"}


def placement(args: argparse.Namespace, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """The placement fields: the flags given, else ``base``'s values (a resumed run's), else
    LMRunSpec's defaults (a new run's)."""
    from dataclasses import fields

    from iif_ray.lm.spec import LMRunSpec

    defaults = {f.name: f.default for f in fields(LMRunSpec)}
    base = base or {}
    out = {}
    for flag, name in PLACEMENT.items():
        value = getattr(args, flag)
        out[name] = value if value is not None else base.get(name, defaults[name])
    return out


def resume_spec(args: argparse.Namespace) -> Any:
    """The resumed run's spec, with the placement flags given on this command line."""
    from dataclasses import replace

    from iif_ray.lm.spec import read_spec

    spec = read_spec(args.resume)
    return replace(spec, **placement(args, spec.to_dict()))


class TrainLMCommand(Command):
    name = "train-lm"
    help = "IIF, PPO or the random control for a language-model policy (detox-mini)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--model", help="local Hugging Face causal-LM directory (default: "
                                            "the detox-mini model, pre-trained once)")
        parser.add_argument("--reward", help="local text-classifier directory for the reward "
                                             "(default: detox-mini's classifier)")
        parser.add_argument("--reward-label", help="the classifier label whose probability "
                                                   "is the reward (default: label 0)")
        parser.add_argument("--prompts", help="local prompt file: .jsonl with a 'prompt' "
                                              "field (a string, or {'text': ...} as "
                                              "real-toxicity-prompts ships), .parquet with a "
                                              "'prompt' column, or .txt, one per line "
                                              "(default: detox-mini's prompts)")
        parser.add_argument("--model-cache", default="runs/lm-models",
                            help="where the detox-mini model is pre-trained and kept")
        parser.add_argument("--algo", choices=LM_ALGOS, default="iif")
        parser.add_argument("--estimator", choices=("ppo", "grpo"), default="ppo")
        parser.add_argument("--rounds", type=int_at_least(1, "rounds"), default=100)
        parser.add_argument("--prompts-per-round", type=int_at_least(1, "prompts-per-round"),
                            default=64)
        parser.add_argument("--group-size", type=int_at_least(1, "group-size"), default=4,
                            help="responses per prompt")
        parser.add_argument("--epochs", type=int_at_least(1, "epochs"), default=4)
        parser.add_argument("--minibatch-size", type=int_at_least(1, "minibatch-size"),
                            default=32, help="sequences per gradient step")
        parser.add_argument("--drop-fraction", type=drop_fraction, default=0.5)
        parser.add_argument("--selection", choices=SELECTION_RULES,
                            help="which records --algo iif drops, given their scores "
                                 "(default neg-bottom, the paper's; negative drops every "
                                 "negative-scored one and ignores --drop-fraction)")
        parser.add_argument("--scoring-method", choices=("ghost", "jvp"), default="ghost")
        parser.add_argument("--lora-rank", type=int_at_least(1, "lora-rank"), default=8)
        parser.add_argument("--eval-every", type=int_at_least(1, "eval-every"), default=5)
        parser.add_argument("--checkpoint-every", type=int_at_least(1, "checkpoint-every"),
                            default=5, help="rounds between checkpoints (and the last round)")
        parser.add_argument("--num-scorers", type=int_at_least(0, "num-scorers"), default=0,
                            help="scorer actors (0: the learner scores the records itself)")
        parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                            help="the base model's weights (bfloat16 halves a GPU's memory for "
                                 "them; adapters, log-probabilities and scores stay float32)")
        # Placement flags (default None: "not given") also apply to --resume: a run saved on
        # a GPU machine can continue on a CPU one, and the other way round.
        for actor in ("rollout", "learner", "scorer"):
            parser.add_argument(f"--num-gpus-per-{actor}",
                                type=nonneg_float(f"num-gpus-per-{actor}"),
                                help=f"GPUs {'each' if actor == 'scorer' else 'the'} {actor} "
                                     "actor reserves (fractions share one; default 0); an "
                                     "actor with any computes on it")
        parser.add_argument("--scorer-timeout", type=positive_float("scorer-timeout"),
                            help="seconds a scorer actor may take on its shard before it is "
                                 "replaced and the shard re-scored (default 1800)")
        parser.add_argument("--seed", type=int_at_least(0, "seed"), default=0)
        parser.add_argument("--out", help="run directory to create")
        parser.add_argument("--resume", metavar="DIR",
                            help="continue the LM run in DIR from its last checkpoint (its "
                                 "run.json gives every setting but placement: "
                                 "--num-gpus-per-* and --scorer-timeout may change)")
        parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
        parser.add_argument("--address", help="Ray address: omit for an embedded local Ray")

    def validate(self, args: argparse.Namespace, *, here: bool = True) -> None:
        if (args.out is None) == (args.resume is None):
            raise UsageError("give --out DIR for a new run or --resume DIR to continue one "
                             "(exactly one of them)")
        if args.resume and here:
            from iif_ray.run import RUN_SPEC, SUMMARY, is_complete

            try:
                spec = resume_spec(args)  # migrates a directory with the old LM file names
            except FileNotFoundError:
                raise UsageError(f"--resume {args.resume!r} holds no LM run (no {RUN_SPEC}); "
                                 "accepted: a directory an earlier train-lm wrote") from None
            except ValueError as e:  # the other engine's run, or a spec this one refuses
                raise UsageError(f"--resume {args.resume!r}: {e}") from None
            if is_complete(args.resume):
                raise UsageError(f"--resume {args.resume!r} already completed ({SUMMARY} "
                                 "exists); accepted: an interrupted run")
            self._check_gpus(args, spec)
            return
        if args.selection is not None and args.algo != "iif":
            raise UsageError(f"--selection applies to --algo iif (the random control drops at "
                             f"random, ppo drops nothing), got --algo {args.algo}")
        batch = args.prompts_per_round * args.group_size
        if args.minibatch_size > batch:
            raise UsageError(f"--minibatch-size {args.minibatch_size} is larger than a round's "
                             f"{batch} sequences (--prompts-per-round x --group-size); "
                             f"accepted: 1 to {batch}")
        if args.estimator == "grpo" and args.group_size < 2:
            raise UsageError("--estimator grpo needs --group-size >= 2 (its advantages are "
                             f"relative to the group), got {args.group_size}")
        if args.prompts and here:
            from iif_ray.lm.prompts import PromptFile, PromptFileError

            try:
                PromptFile(args.prompts)
            except PromptFileError as e:
                raise UsageError(str(e)) from None
        if here:
            self._check_gpus(args, None)
        for flag, path in (("--model", args.model), ("--reward", args.reward)):
            if path and here and not (Path(path) / "config.json").is_file():
                raise UsageError(f"{flag} {path!r} is not a local model directory (no "
                                 "config.json); accepted: a directory written by "
                                 "save_pretrained")

    @staticmethod
    def _check_gpus(args: argparse.Namespace, spec: Any) -> None:
        """Ray's rule for GPU reservations, and on an embedded Ray this machine's GPUs,
        checked before Ray starts (an actor Ray cannot place would otherwise wait)."""
        for flag in ("rollout", "learner", "scorer"):
            value = getattr(args, f"num_gpus_per_{flag}")
            if value is not None and value > 1 and value != int(value):
                raise UsageError(f"--num-gpus-per-{flag} {value:g}: accepted: a fraction in "
                                 "[0, 1] or a whole number of GPUs (Ray's rule)")
        if args.address is not None or os.environ.get("RAY_ADDRESS"):
            return  # a cluster's GPUs are the cluster's to count
        if spec is None:
            spec = SimpleNamespace(**placement(args), num_scorers=args.num_scorers)
        check_local_gpus(
            spec.rollout_gpus + spec.learner_gpus + spec.num_scorers * spec.gpus_per_scorer,
            "the rollout, learner and scorer actors ask for",
            hint="; with --resume, --num-gpus-per-* 0 continues on CPU")

    def run(self, args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
        from iif_ray.lm.learner import UpdateSettings
        from iif_ray.lm.spec import LMRunSpec
        from iif_ray.lm.trainer import fit
        from iif_ray.ray_session import ray_session

        self.validate(args)
        if args.resume:
            spec = resume_spec(args)
            with ray_session(args.address):
                summary = fit(spec, echo=console.print, resume=True)
            return self._report(spec.algo, Path(args.resume), summary)
        out = prepare_out(args.out, args.overwrite)
        model = args.model
        if model is None:
            from iif_ray.lm.pretrain import detox_model

            model = str(detox_model(args.model_cache, echo=console.print))
        spec = LMRunSpec(
            model=model, out_dir=str(out), algo=args.algo, rounds=args.rounds,
            prompts_per_round=args.prompts_per_round, group_size=args.group_size,
            drop_fraction=args.drop_fraction, selection=args.selection,
            scoring_method=args.scoring_method,
            lora_rank=args.lora_rank, eval_every=args.eval_every, seed=args.seed,
            checkpoint_every=args.checkpoint_every, num_scorers=args.num_scorers,
            reward=args.reward, reward_label=args.reward_label,
            prompts=str(Path(args.prompts).resolve()) if args.prompts else None,
            dtype=args.dtype, **placement(args),
            update=UpdateSettings(estimator=args.estimator, epochs=args.epochs,
                                  minibatch_size=args.minibatch_size))
        with ray_session(args.address):
            summary = fit(spec, echo=console.print)
        return self._report(args.algo, out, summary)

    @staticmethod
    def _report(algo: str, out: Path, summary: dict) -> int:
        from iif_ray.run import progress_path

        last = summary["rounds"][-1]
        console.print(f"{algo}: reward {last['reward_mean']:.3f} in round {last['round']}; "
                      f"per-round figures in {progress_path(out)}")
        return 0
