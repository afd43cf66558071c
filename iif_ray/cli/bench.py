"""``iif-ray bench``: speed figures measured side by side in one run (scoring, pool, sb3)."""

from __future__ import annotations

import argparse

from iif_ray.cli.base import Command
from iif_ray.cli.common import UsageError, console, int_at_least
from iif_ray.cli.flags import add_address
from iif_ray.presets import get_preset


class BenchCommand(Command):
    name = "bench"
    help = "print benchmark figures"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        bench_sub = parser.add_subparsers(dest="bench", required=True)
        scoring = bench_sub.add_parser("scoring", help="scoring vs PPO update seconds per round")
        scoring.add_argument("--presets", default="lunarlander,minigrid")
        scoring.add_argument("--rounds", type=int_at_least(2, "rounds"), default=4)
        scoring.add_argument("--gpu", action="store_true",
                             help="also run each preset with the learner on a GPU, side by side")
        add_address(scoring)
        pool = bench_sub.add_parser("pool", help="records/s: in-process scoring vs scorer actors")
        pool.add_argument("--workloads", default="lunarlander-2k,mlp3x512-16k,minigrid-cnn-64k")
        pool.add_argument("--max-scorers", type=int_at_least(1, "max-scorers"),
                          help="largest pool (default: the cluster's CPU count)")
        pool.add_argument("--reps", type=int_at_least(1, "reps"), default=3)
        add_address(pool)
        sb3 = bench_sub.add_parser("sb3", help="seconds per PPO round: ours vs Stable-Baselines3 "
                                               "and a bare torch loop")
        sb3.add_argument("--presets", default="lunarlander,acrobot")
        sb3.add_argument("--rounds", type=int_at_least(1, "rounds"), default=5,
                         help="timed rounds of each, alternating, after one warm-up round")
        sb3.add_argument("--num-envs", default="1,8,16", help="sampling layouts to compare")
        add_address(sb3)
        lm = bench_sub.add_parser("lm", help="LM path: scoring vs update seconds per round")
        lm.add_argument("--model", help="local causal-LM directory (default: an untrained "
                                        "detox-mini-sized model; timing does not need training)")
        lm.add_argument("--sequences", type=int_at_least(2, "sequences"), default=256)
        lm.add_argument("--minibatches", default="1,32",
                        help="minibatch sizes to time (1: the paper's RLHF setting)")
        lm.add_argument("--epochs", type=int_at_least(1, "epochs"), default=4)

    def run(self, args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
        from iif_ray.experiments.speed import POOL_WORKLOADS, bench_pool, bench_scoring, bench_speed
        from iif_ray.ray_session import ray_session

        if args.bench == "lm":
            from iif_ray.experiments.lm_speed import bench_lm

            try:
                sizes = [int(x) for x in args.minibatches.split(",") if x]
            except ValueError:
                sizes = []
            if not sizes or min(sizes) < 1 or max(sizes) > args.sequences:
                raise UsageError(f"--minibatches {args.minibatches!r}: accepted: comma-"
                                 f"separated integers from 1 to --sequences {args.sequences}")
            bench_lm(args.model, sequences=args.sequences, minibatches=sizes,
                     epochs=args.epochs, echo=console.print)
            return 0
        if args.bench == "sb3":
            presets = _known_presets(args.presets)
            try:
                layouts = tuple(int(x) for x in args.num_envs.split(",") if x)
            except ValueError:
                layouts = ()
            steps = min(get_preset(n).steps_per_round for n in presets)
            if not layouts or any(n < 1 or steps % n for n in layouts):
                raise UsageError(f"--num-envs {args.num_envs!r}: accepted: comma-separated "
                                 f"divisors of the round's {steps} steps, e.g. 1,8,16")
            from iif_ray.experiments.sb3 import require_sb3

            try:
                require_sb3()
            except RuntimeError as e:
                raise UsageError(str(e)) from None
            with ray_session(args.address):
                bench_speed(presets, rounds=args.rounds, num_envs_options=layouts,
                            echo=console.print)
            return 0
        if args.bench == "pool":
            workloads = [n.strip() for n in args.workloads.split(",") if n.strip()]
            unknown = [w for w in workloads if w not in POOL_WORKLOADS]
            if unknown:
                raise UsageError(
                    f"unknown workload(s) {unknown}; available: {list(POOL_WORKLOADS)}")
            with ray_session(args.address):
                bench_pool(workloads, args.max_scorers, args.reps, echo=console.print)
            return 0
        names = _known_presets(args.presets)
        with ray_session(args.address):
            if args.gpu:
                import ray

                if ray.cluster_resources().get("GPU", 0) < 1:
                    raise UsageError("--gpu needs a GPU; this Ray has none")
            bench_scoring(names, rounds=args.rounds, echo=console.print,
                          devices=(0.0, 1.0) if args.gpu else (0.0,))
        return 0


def _known_presets(text: str) -> list[str]:
    """The comma-separated preset names of ``text``.

    Raises:
        UsageError: an unknown name, or none at all.
    """
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise UsageError(f"--presets {text!r}: name at least one preset")
    try:
        for n in names:
            get_preset(n)
    except ValueError as e:
        raise UsageError(str(e)) from None
    return names
