"""``iif-ray lm-checks``: flipped-reward AUROC and the single-round intervention (LM path),
on detox-mini (default) or arith (``--task arith``: GRPO over groups of 8, exact rewards)."""

from __future__ import annotations

import argparse
from pathlib import Path

from iif_ray.atomic_files import write_json_atomically
from iif_ray.cli.base import Command
from iif_ray.cli.common import UsageError, console, int_at_least
from iif_ray.lm import LM_TASKS


def sizes(text: str) -> list[int]:
    """``--validation-prompts``: comma-separated integers >= 1."""
    try:
        values = [int(part) for part in text.split(",") if part]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"validation-prompts must be comma-separated integers >= 1, got {text!r}")
    return values


class LMChecksCommand(Command):
    name = "lm-checks"
    joins_ray = False
    help = "LM influence checks: flipped-reward AUROC, single-round intervention"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--task", choices=LM_TASKS, default="detox",
                            help="detox: detox-mini (log-odds reward, PPO); arith: digit "
                                 "addition (exact 0/1 reward, GRPO over the task's groups "
                                 "and update settings; held-out: the exact answer's "
                                 "probability and greedy accuracy)")
        parser.add_argument("--model", help="local causal-LM directory (default: the "
                                            "task's tiny model, pre-trained once)")
        parser.add_argument("--model-cache", default="runs/lm-models",
                            help="where the task's tiny models are pre-trained and kept")
        parser.add_argument("--seeds", type=int_at_least(1, "seeds"), default=5)
        parser.add_argument("--sequences", type=int_at_least(8, "sequences"), default=256,
                            help="records per round (arith: a multiple of the task's "
                                 "group size)")
        parser.add_argument("--validation-prompts", type=sizes, default=[64, 256, 1024],
                            metavar="V,...",
                            help="validation responses the influence target is built from: "
                                 "the intervention runs once per size, the flip check with "
                                 "the largest (default: 64,256,1024; the paper's is 1,024)")
        parser.add_argument("--out", required=True, help="JSON file for the results")
        parser.add_argument("--overwrite", action="store_true",
                            help="replace an existing --out file")

    def run(self, args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
        out = Path(args.out)
        if not out.parent.is_dir():
            raise UsageError(f"--out {args.out!r}: directory {str(out.parent)!r} does not "
                             "exist; accepted: a file path in an existing directory")
        if out.is_dir():
            raise UsageError(f"--out {args.out!r} is a directory; accepted: a JSON file path")
        if out.exists() and not args.overwrite:
            raise UsageError(f"--out {args.out!r} exists; pass --overwrite to replace it")
        from iif_ray.lm.spec import TASK_DEFAULTS

        group = TASK_DEFAULTS[args.task].get("group_size", 1)
        if args.sequences % group:
            raise UsageError(f"--sequences {args.sequences}: {args.task}'s records come in "
                             f"groups of {group} answers to one prompt; accepted: a multiple "
                             f"of {group}")
        if args.model:
            from iif_ray.lm.inputs import InputError, check_policy_dir

            try:
                check_policy_dir(args.model)  # config, weights, tokenizer: before any check
            except InputError as e:
                raise UsageError(str(e)) from None
        from iif_ray.lm.checks import run_checks

        model = args.model
        if model is None:
            from iif_ray.lm.pretrain import arith_model, detox_model

            pretrained = arith_model if args.task == "arith" else detox_model
            model = str(pretrained(args.model_cache, echo=console.print))
        results = run_checks(model, args.seeds, echo=console.print, sequences=args.sequences,
                             validation=args.validation_prompts, task=args.task)
        task = {} if args.task == "detox" else {"task": args.task}  # detox's file as it was
        write_json_atomically(out, {"model": model, **task, **results})
        console.print(f"results in {out}")
        return 0
