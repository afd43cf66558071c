"""``iif-ray demo``: PPO and IIF on the same seeds, evaluated exactly, with a one-line reading.

A short Tune grid (``ppo`` and ``iif`` x seeds, two trials at a time on the embedded Ray) saves
every round's policy; ``iif-ray evaluate``'s evaluator then scores them (the exact expected
return on FrozenLake, the default) and the demo prints, per seed and paired by seed, the
return after the last round and the mean over all rounds, with a bootstrap interval on the
paired difference and the reading that interval supports.
"""

from __future__ import annotations

import argparse

from iif_ray.cli import common
from iif_ray.cli.base import Command
from iif_ray.cli.flags import add_address, add_flags, given
from iif_ray.experiments.options import DemoOptions


class DemoCommand(Command):
    name = "demo"
    help = "short IIF-vs-PPO comparison on the same seeds, exact evaluation, one-line reading"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_flags(parser, DemoOptions)
        # Named even when defaulted, so a submitted job anchors it under the cluster's
        # results root (iif_ray.cluster.jobs).
        parser.set_defaults(out=DemoOptions().out)
        add_address(parser)

    def validate(self, args: argparse.Namespace, *, here: bool = True) -> None:
        self._options(args)

    @staticmethod
    def _options(args: argparse.Namespace) -> DemoOptions:
        try:
            return DemoOptions(**given(args, DemoOptions))
        except ValueError as e:
            raise common.UsageError(str(e)) from None

    def run(self, args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
        from dataclasses import replace

        from iif_ray.experiments.demo import run_demo
        from iif_ray.experiments.sweeps import record_sweep
        from iif_ray.ray_session import ray_session
        from iif_ray.run import NEW, SWEEP_MARKERS

        opts = self._options(args)
        # A demo's directory is replaced on every run, but only when it is one a demo or a
        # sweep wrote: a directory of other files is refused, never emptied.
        with common.owned_dir(opts.out, mode=NEW, overwrite=True, markers=SWEEP_MARKERS,
                              command=self.name) as out:
            opts = replace(opts, out=str(out))
            record_sweep(out, self.name, opts)
            with ray_session(args.address):
                table, reading = run_demo(opts, echo=common.console.print)
        common.console.print(table)
        common.console.print(reading)
        common.console.print(f"runs, snapshots and evaluations in {out}/")
        return 0
