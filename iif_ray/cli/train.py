"""``iif-ray train``: one run of IIF, PPO or a control, to its budget, into a run directory."""

from __future__ import annotations

import argparse
from pathlib import Path

from iif_ray.cli.base import Command
from iif_ray.cli.common import (
    UsageError,
    add_run_args,
    checked_run_inputs,
    console,
    fmt,
    int_at_least,
    prepare_out,
    round_printer,
    train_runs,
)
from iif_ray.presets import ALGOS


class TrainCommand(Command):
    name = "train"
    help = "train IIF or PPO on one environment"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_run_args(parser)
        parser.add_argument("--algo", choices=ALGOS, default="iif")
        parser.add_argument("--seed", type=int_at_least(0, "seed"), default=0)
        parser.add_argument("--out", required=True, help="run directory to create")
        parser.add_argument("--overwrite", action="store_true",
                            help="replace a non-empty --out")
        parser.add_argument("--checkpoint-every", type=int_at_least(1, "checkpoint-every"),
                            default=10, help="rounds between checkpoints (what --resume "
                                             "restarts from)")
        parser.add_argument("--resume", action="store_true",
                            help="continue the interrupted run in --out from its last "
                                 "checkpoint, with the settings it was started with")

    def validate(self, args: argparse.Namespace, *, here: bool = True) -> None:
        checked_run_inputs(args, here=here)

    def run(self, args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
        from iif_ray.run import CONTENTS

        if args.resume:
            summary, out = self._resume(args)
        else:
            preset, overrides = checked_run_inputs(args)
            out = prepare_out(args.out, args.overwrite)
            [summary] = train_runs(args, preset, [(args.algo, args.seed, str(out))],
                                   args.timesteps, overrides,
                                   checkpoint_every=args.checkpoint_every)
        console.print(f"final return {fmt(summary['final_return'])} after "
                      f"{summary['env_steps']:,} env steps in {summary['wall_s']:.1f} s")
        scorers = [s for lr in summary["resources"]["learners"] for s in lr["scorers"]]
        if scorers:
            nodes = sorted({s["node_id"][:12] for s in scorers})
            console.print(f"{len(scorers)} scorer actor(s) ran on node(s) {', '.join(nodes)}")
        console.print(f"results in {out}/ ({CONTENTS})")
        return 0

    @staticmethod
    def _resume(args: argparse.Namespace) -> tuple[dict, Path]:
        from iif_ray.driver import resume
        from iif_ray.ray_session import ray_session
        from iif_ray.run import CLASSIC, read_run_spec

        given = [flag for flag, value in (("--preset", args.preset), ("--env", args.env),
                                          ("--timesteps", args.timesteps),
                                          ("--overwrite", args.overwrite)) if value]
        if given:
            raise UsageError(f"--resume continues with the run's own settings; {given[0]} "
                             "cannot change them (accepted with --resume: --out, --address)")
        out = Path(args.out).resolve()
        try:
            spec = read_run_spec(out, CLASSIC)
        except (FileNotFoundError, ValueError) as e:
            raise UsageError(str(e)) from None
        label = f"resuming {spec['algo']} on {spec['preset']['env_id']} (seed {spec['seed']})"
        with ray_session(args.address):
            summary = resume(out, round_printer(
                label, int(spec.get("timesteps") or spec["preset"]["timesteps"])))
        return summary, out
