"""``iif-ray lm-checks``: flipped-reward AUROC and the single-round intervention (LM path)."""

from __future__ import annotations

import argparse
from pathlib import Path

from iif_ray.atomic_files import write_json_atomically
from iif_ray.cli.base import Command
from iif_ray.cli.common import UsageError, console, int_at_least


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
        parser.add_argument("--model", help="local causal-LM directory (default: the "
                                            "detox-mini model, pre-trained once)")
        parser.add_argument("--model-cache", default="runs/lm-models")
        parser.add_argument("--seeds", type=int_at_least(1, "seeds"), default=5)
        parser.add_argument("--sequences", type=int_at_least(8, "sequences"), default=256)
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
        if args.model:
            from iif_ray.lm.inputs import InputError, check_policy_dir

            try:
                check_policy_dir(args.model)  # config, weights, tokenizer: before any check
            except InputError as e:
                raise UsageError(str(e)) from None
        from iif_ray.lm.checks import run_checks

        model = args.model
        if model is None:
            from iif_ray.lm.pretrain import detox_model

            model = str(detox_model(args.model_cache, echo=console.print))
        results = run_checks(model, args.seeds, echo=console.print, sequences=args.sequences,
                             validation=args.validation_prompts)
        write_json_atomically(out, {"model": model, **results})
        console.print(f"results in {out}")
        return 0
