"""``iif-ray evaluate``: exact or paired evaluation of a sweep's policy snapshots."""

from __future__ import annotations

import argparse

from iif_ray.cli.base import Command
from iif_ray.cli.common import UsageError, console, int_at_least, owned_dir
from iif_ray.cli.flags import add_address
from iif_ray.presets import PRESETS


class EvaluateCommand(Command):
    name = "evaluate"
    help = "evaluate a sweep's policy snapshots (exact DP or paired Monte-Carlo) into evals.csv"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("directory", help="a sweep's --out directory (holding policies/)")
        parser.add_argument("--envs", default="", help="comma-separated presets (default: all)")
        parser.add_argument("--every", type=int_at_least(1, "every"),
                            help="evaluate every N-th round (default: per environment)")
        parser.add_argument("--min-episodes", type=int_at_least(2, "min-episodes"),
                            help="Monte-Carlo episodes before the precision check (default 100)")
        add_address(parser)

    def validate(self, args: argparse.Namespace, *, here: bool = True) -> None:
        for env in (e for e in args.envs.split(",") if e):
            if env not in PRESETS:
                raise UsageError(f"--envs: unknown preset {env!r}; accepted: "
                                 f"{', '.join(sorted(PRESETS))}")

    def run(self, args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
        from iif_ray.experiments.evaluate import EvaluateOptions, evaluate_sweep, pending_work
        from iif_ray.ray_session import ray_session

        self.validate(args)
        opts = EvaluateOptions(out=args.directory,
                               envs=tuple(e for e in args.envs.split(",") if e),
                               every=args.every, min_episodes=args.min_episodes)
        try:
            work = pending_work(opts)  # bad directory: one line, before Ray starts
        except (FileNotFoundError, ValueError) as e:
            raise UsageError(str(e)) from None
        if not work:
            console.print(f"every snapshot under {args.directory} is already evaluated")
            return 0
        from iif_ray.run import EXISTING, SWEEP_MARKERS

        with owned_dir(args.directory, mode=EXISTING, markers=SWEEP_MARKERS,
                       command=self.name, flag="directory"), ray_session(args.address):
            path = evaluate_sweep(opts, echo=console.print, work=work)
        console.print(f"evaluations in {path}; next: iif-ray report {args.directory}")
        return 0
