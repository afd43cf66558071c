"""``iif-ray sweep``: run (or resume) a Tune sweep from ``tune_experiments/``."""

from __future__ import annotations

import argparse
import sys

from iif_ray.cli.base import Command
from iif_ray.cli.common import UsageError, console, int_at_least
from iif_ray.cli.flags import add_address
from iif_ray.presets import BENCHMARK_ALGOS


class SweepCommand(Command):
    name = "sweep"
    help = "run (or resume) a Tune sweep from tune_experiments/"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("sweep", help="sweep name (tune_experiments/<name>.py) or file path")
        parser.add_argument("--envs", default="",
                            help="comma-separated presets (default: sweep's)")
        parser.add_argument("--algos", default=",".join(BENCHMARK_ALGOS))
        parser.add_argument("--seeds", type=int_at_least(1, "seeds"), default=3)
        parser.add_argument("--first-seed", type=int_at_least(0, "first-seed"), default=0)
        parser.add_argument("--budget-scale", type=float, default=1.0,
                            help="fraction of each preset's paper budget, in (0, 10]")
        parser.add_argument("--eval-episodes", type=int_at_least(1, "eval-episodes"))
        parser.add_argument("--num-envs", type=int_at_least(1, "num-envs"), default=1)
        parser.add_argument("--max-concurrent", type=int_at_least(1, "max-concurrent"))
        parser.add_argument("--checkpoint-every", type=int_at_least(1, "checkpoint-every"),
                            default=10, help="rounds between trial checkpoints (resume points)")
        parser.add_argument("--out", default="runs/sweep")
        add_address(parser)
        parser.add_argument("--verbose", action="store_true",
                            help="Tune's own progress tables (each trial's configuration, "
                                 "trial status every 30 s) instead of one line per round")

    def run(self, args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
        from iif_ray.experiments.sweeps import SweepError, SweepOptions, load_sweep, run_sweep
        from iif_ray.ray_session import ray_session

        try:
            opts = SweepOptions(
                envs=[e for e in args.envs.split(",") if e],
                algos=[a for a in args.algos.split(",") if a],
                seeds=args.seeds, first_seed=args.first_seed, budget_scale=args.budget_scale,
                out=args.out, max_concurrent=args.max_concurrent, num_envs=args.num_envs,
                eval_episodes=args.eval_episodes, checkpoint_every=args.checkpoint_every,
                verbose=args.verbose)
            module = load_sweep(args.sweep)
        except (ValueError, FileNotFoundError) as e:
            raise UsageError(str(e)) from None
        with ray_session(args.address):
            try:
                path = run_sweep(module, opts)
            except SweepError as e:
                print(f"iif-ray sweep: {e}", file=sys.stderr)
                return 1
        console.print(f"per-round results in {path}; next: iif-ray report {path.parent}")
        return 0
