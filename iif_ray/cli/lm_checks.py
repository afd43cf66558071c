"""``iif-ray lm-checks``: flipped-reward AUROC and the single-round intervention (LM path)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from iif_ray.cli.base import Command
from iif_ray.cli.common import UsageError, console, int_at_least


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
        parser.add_argument("--out", required=True, help="JSON file for the results")

    def run(self, args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
        out = Path(args.out)
        if not out.parent.is_dir():
            raise UsageError(f"--out {args.out!r}: directory {str(out.parent)!r} does not "
                             "exist; accepted: a file path in an existing directory")
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
        results = run_checks(model, args.seeds, echo=console.print, sequences=args.sequences)
        out.write_text(json.dumps({"model": model, **results}, indent=1))
        console.print(f"results in {out}")
        return 0
