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
from iif_ray.cli.flags import add_address
from iif_ray.presets import PRESETS, get_preset


class DemoCommand(Command):
    name = "demo"
    help = "short IIF-vs-PPO comparison on the same seeds, exact evaluation, one-line reading"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--preset", default="frozenlake",
                            help=f"paper preset: {', '.join(PRESETS)} (default frozenlake)")
        parser.add_argument("--seeds", type=common.int_at_least(1, "seeds"), default=5,
                            help="training seeds per algorithm (a reading needs 5 or more)")
        parser.add_argument("--rounds", type=common.int_at_least(1, "rounds"), default=8,
                            help="PPO rounds per run (2,048 env steps each)")
        parser.add_argument("--max-concurrent", type=common.int_at_least(1, "max-concurrent"),
                            default=2, help="trials trained at once")
        parser.add_argument("--out", default="runs/demo", help="directory for the runs")
        add_address(parser)
        parser.add_argument("--verbose", action="store_true",
                            help="Tune's own progress tables (each trial's configuration, "
                                 "trial status every 30 s) instead of one line per round")

    def validate(self, args: argparse.Namespace, *, here: bool = True) -> None:
        try:
            preset = get_preset(args.preset)
        except ValueError as e:
            raise common.UsageError(str(e)) from None
        if args.rounds > 10 * preset.rounds:
            raise common.UsageError(f"--rounds {args.rounds} is more than 10x the preset's "
                                    f"{preset.rounds}; accepted: 1 to {10 * preset.rounds}")

    def run(self, args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
        from iif_ray.experiments.demo import DemoOptions, run_demo
        from iif_ray.ray_session import ray_session

        self.validate(args)
        out = common.prepare_out(args.out, overwrite=True)
        opts = DemoOptions(preset=args.preset, seeds=args.seeds, rounds=args.rounds,
                           out=str(out), max_concurrent=args.max_concurrent,
                           verbose=args.verbose)
        with ray_session(args.address):
            table, reading = run_demo(opts, echo=common.console.print)
        common.console.print(table)
        common.console.print(reading)
        common.console.print(f"runs, snapshots and evaluations in {out}/")
        return 0
