"""``iif-ray sweep``: run (or resume) a Tune sweep from ``tune_experiments/``."""

from __future__ import annotations

import argparse
import sys

from iif_ray.cli.base import Command
from iif_ray.cli.common import UsageError, console, owned_dir
from iif_ray.cli.flags import add_address, add_flags, given
from iif_ray.experiments.options import SweepOptions


class SweepCommand(Command):
    name = "sweep"
    help = "run (or resume) a Tune sweep from tune_experiments/"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("sweep", help="sweep name (tune_experiments/<name>.py) or file path")
        add_flags(parser, SweepOptions)
        # Named even when defaulted, so a submitted job anchors it under the cluster's
        # results root (iif_ray.cluster.jobs).
        parser.set_defaults(out=SweepOptions().out)
        add_address(parser)

    def run(self, args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
        from iif_ray.experiments.sweeps import SweepError, load_sweep, record_sweep, run_sweep
        from iif_ray.ray_session import ray_session

        try:
            opts = SweepOptions(**given(args, SweepOptions))
            module = load_sweep(args.sweep)
        except (ValueError, FileNotFoundError) as e:
            raise UsageError(str(e)) from None
        from iif_ray.run import CONTINUE, SWEEP_MARKERS

        with owned_dir(opts.out, mode=CONTINUE, markers=SWEEP_MARKERS, command=self.name) as out:
            record_sweep(out, args.sweep, opts)
            with ray_session(args.address):
                try:
                    path = run_sweep(module, opts)
                except SweepError as e:
                    print(f"iif-ray sweep: {e}", file=sys.stderr)
                    return 1
        console.print(f"per-round results in {path}; next: iif-ray report {path.parent}")
        return 0
