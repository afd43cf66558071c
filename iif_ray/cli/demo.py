"""``iif-ray demo``: a short IIF-vs-PPO comparison on one preset, with a side-by-side table."""

from __future__ import annotations

import argparse

from rich.table import Table

from iif_ray.cli import common
from iif_ray.cli.base import Command
from iif_ray.presets import Preset


class DemoCommand(Command):
    name = "demo"
    help = "short IIF-vs-PPO comparison with a side-by-side table"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        common.add_run_args(parser)
        parser.add_argument("--seeds", type=common.int_at_least(1, "seeds"), default=1)
        parser.add_argument("--out", default="runs/demo", help="parent directory for the runs")
        parser.set_defaults(preset_default="cartpole", timesteps_default=40_960)

    def validate(self, args: argparse.Namespace, *, here: bool = True) -> None:
        common.checked_run_inputs(args, here=here)

    def run(self, args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
        preset, overrides = common.checked_run_inputs(args)
        timesteps = args.timesteps or args.timesteps_default
        parent = common.prepare_out(args.out, overwrite=True)
        runs = [(algo, seed, str(parent / f"{algo}-seed{seed}"))
                for seed in range(args.seeds) for algo in ("ppo", "iif")]
        summaries = common.train_runs(args, preset, runs, timesteps, overrides)
        common.console.print(comparison_table(summaries, preset))
        common.console.print(f"runs in {parent}/")
        return 0


def comparison_table(summaries: list[dict], preset: Preset) -> Table:
    """Final and best return, env steps, wall-clock, update time, fraction dropped per run."""
    table = Table(title=f"IIF vs PPO on {preset.env_id} (p={preset.drop_fraction})")
    for col in ("algo", "seed", "final return", "best return", "env steps", "wall s",
                "update s/round", "frac dropped"):
        table.add_column(col, justify="right")
    for s in summaries:
        fmt = common.fmt
        table.add_row(s["algo"], str(s["seed"]), fmt(s["final_return"]),
                      fmt(s["best_return"]), f"{s['env_steps']:,}", fmt(s["wall_s"]),
                      fmt(s["mean_update_s"], ".3f"), fmt(s["mean_frac_dropped"], ".3f"))
    return table
