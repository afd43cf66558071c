"""``iif-ray train``: one run of IIF, PPO or a control, to its budget, into a run directory."""

from __future__ import annotations

import argparse

from iif_ray.cli.base import Command
from iif_ray.cli.common import (
    UsageError,
    add_run_args,
    attribution_overrides,
    console,
    fmt,
    int_at_least,
    resolve_preset,
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

    def run(self, args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
        from iif_ray.run_dir import CONTENTS, prepare_out_dir

        preset = resolve_preset(args)
        overrides = attribution_overrides(args)
        try:
            out = prepare_out_dir(args.out, overwrite=args.overwrite)
        except FileExistsError as e:
            raise UsageError(str(e)) from None
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
