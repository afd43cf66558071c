"""``iif-ray diagnose``: plots of what drove or harmed learning in a run."""

from __future__ import annotations

import argparse

from iif_ray.cli.base import Command
from iif_ray.cli.common import UsageError, console, int_at_least, int_list, owned_dir
from iif_ray.cli.flags import add_address


class DiagnoseCommand(Command):
    name = "diagnose"
    help = "plots of what drove or harmed learning in a run (RUN/diagnostics/)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("run",
                            help="run directory of iif-ray train (best with --ledger-obs) or "
                                 "train-lm")
        parser.add_argument("--intervene", type=int_list, metavar="K1,K2,...",
                            help="rounds to retrain unfiltered / without harmful / without "
                                 "random records")
        parser.add_argument("--seeds", type=int_at_least(1, "seeds"), default=3,
                            help="seeds of the intervention")
        parser.add_argument("--episodes", type=int_at_least(1, "episodes"), default=100,
                            help="evaluation episodes per intervention variant (return target)")
        parser.add_argument("--probes-out", metavar="FILE.parquet",
                            help="instead: write a probe file of the states where the agent "
                                 "chose --probe-action in --probe-round")
        parser.add_argument("--probe-round", type=int_at_least(1, "probe-round"))
        parser.add_argument("--probe-action", type=int_at_least(0, "probe-action"))
        add_address(parser, purpose="the Ray cluster --intervene trains on")

    def run(self, args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
        from iif_ray.run import EXISTING, RUN_MARKERS, SUMMARY

        if args.probes_out and (args.probe_round is None or args.probe_action is None):
            raise UsageError("--probes-out needs --probe-round and --probe-action")
        # It writes RUN/diagnostics/ (and --intervene trains beside the run): not while
        # another command owns the run.
        with owned_dir(args.run, mode=EXISTING, markers=(*RUN_MARKERS, SUMMARY),
                       command=self.name, flag="run"):
            return self._diagnose(args)

    @staticmethod
    def _diagnose(args: argparse.Namespace) -> int:
        from iif_ray.diagnostics import diagnose, write_probes

        try:
            if args.probes_out:
                n = write_probes(args.run, args.probes_out, args.probe_round, args.probe_action)
                console.print(f"wrote {n} probe states to {args.probes_out}; use it with "
                              f"--target action --target-option probe_file={args.probes_out}")
                return 0
            if args.intervene:
                from iif_ray.diagnostics.index import check_intervention
                from iif_ray.ray_session import ray_session

                check_intervention(args.run, args.intervene)  # refused before Ray starts
                with ray_session(args.address):
                    index = diagnose(args.run, intervene_rounds=args.intervene,
                                     seeds=args.seeds, episodes=args.episodes,
                                     echo=console.print)
            else:
                index = diagnose(args.run, echo=console.print)
        except (FileNotFoundError, ValueError) as e:
            raise UsageError(str(e)) from None
        console.print(f"wrote {index} and its plots")
        return 0
