"""``iif-ray train``: one run of IIF, PPO or a control, to its budget, into a run directory."""

from __future__ import annotations

import argparse

from iif_ray.cli.base import Command
from iif_ray.cli.common import (
    add_run_args,
    checked_run_inputs,
    console,
    fmt,
    int_at_least,
    prepare_out,
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

    def validate(self, args: argparse.Namespace, *, here: bool = True) -> None:
        checked_run_inputs(args, here=here)

    def run(self, args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
        from iif_ray.run_dir import CONTENTS

        preset, overrides = checked_run_inputs(args)
        out = prepare_out(args.out, args.overwrite)
        [summary] = train_runs(args, preset, [(args.algo, args.seed, str(out))],
                               args.timesteps, overrides)
        console.print(f"final return {fmt(summary['final_return'])} after "
                      f"{summary['env_steps']:,} env steps in {summary['wall_s']:.1f} s")
        scorers = [s for lr in summary["resources"]["learners"] for s in lr["scorers"]]
        if scorers:
            nodes = sorted({s["node_id"][:12] for s in scorers})
            console.print(f"{len(scorers)} scorer actor(s) ran on node(s) {', '.join(nodes)}")
        console.print(f"results in {out}/ ({CONTENTS})")
        return 0
