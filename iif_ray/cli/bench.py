"""``iif-ray bench``: speed figures measured side by side in one run (scoring, pool, sb3)."""

from __future__ import annotations

import argparse
import os

from iif_ray.cli.base import Command
from iif_ray.cli.common import UsageError, console, int_at_least
from iif_ray.cli.flags import add_address
from iif_ray.presets import PRESETS, get_preset


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
        lm = bench_sub.add_parser("lm", help="LM path: where a round's seconds go (generation, "
                                                "reward, prepare, scoring, update)")
        lm.add_argument("--model", help="local causal-LM directory (default: an untrained "
                                        "detox-mini-sized model; timing does not need training)")
        lm.add_argument("--sequences", type=int_at_least(2, "sequences"), default=256)
        lm.add_argument("--minibatches", default="1,32",
                        help="minibatch sizes to time (1: the paper's RLHF setting)")
        lm.add_argument("--epochs", type=int_at_least(1, "epochs"), default=4)

    def validate(self, args: argparse.Namespace, *, here: bool = True) -> None:
        """Every option checked before Ray starts (and before a model is loaded): a preset
        typo or a pool larger than the machine would otherwise fail or wait after it."""
        if args.bench in ("scoring", "sb3"):
            self._presets(args)
        if args.bench == "sb3":
            self._num_envs(args)
        if args.bench == "sb3" and here:
            from iif_ray.experiments.sb3 import require_sb3

            try:
                require_sb3()
            except RuntimeError as e:
                raise UsageError(str(e)) from None
        if args.bench == "pool":
            self._workloads(args)
            cpus = os.cpu_count() or 1
            embedded = args.address is None and not os.environ.get("RAY_ADDRESS")
            if here and embedded and args.max_scorers is not None and args.max_scorers > cpus:
                raise UsageError(f"--max-scorers {args.max_scorers}: a pool uses one CPU per "
                                 f"scorer and the embedded Ray has {cpus}; accepted: 1 to "
                                 f"{cpus}, or --address for a cluster")
        if args.bench == "lm":
            self._minibatches(args)
            if args.model and here:
                from iif_ray.lm.inputs import InputError, check_policy_dir

                try:
                    check_policy_dir(args.model)
                except InputError as e:
                    raise UsageError(str(e)) from None

    @staticmethod
    def _presets(args: argparse.Namespace) -> list[str]:
        names = [n.strip() for n in args.presets.split(",") if n.strip()]
        if not names:
            raise UsageError(f"--presets {args.presets!r} names no preset; accepted: "
                             f"comma-separated names from {', '.join(PRESETS)}")
        try:
            presets = [get_preset(n) for n in names]
        except ValueError as e:
            raise UsageError(f"--presets: {e}") from None
        if args.bench == "sb3":
            cnn = [p.name for p in presets if "conv_filters" in p.model]
            if cnn:
                raise UsageError(f"--presets: {', '.join(cnn)} use(s) a CNN; the SB3 baseline "
                                 "covers MLP presets only; accepted: "
                                 + ", ".join(n for n, p in PRESETS.items()
                                             if "conv_filters" not in p.model))
        return names

    @staticmethod
    def _num_envs(args: argparse.Namespace) -> tuple[int, ...]:
        try:
            layouts = tuple(int(x) for x in args.num_envs.split(",") if x.strip())
        except ValueError:
            layouts = ()
        steps = min(get_preset(n).steps_per_round for n in BenchCommand._presets(args))
        if not layouts or min(layouts) < 1 or any(steps % n for n in layouts):
            raise UsageError(f"--num-envs {args.num_envs!r}: accepted: comma-separated "
                             f"divisors of the round's {steps} steps, e.g. 1,8,16")
        return layouts

    @staticmethod
    def _workloads(args: argparse.Namespace) -> list[str]:
        from iif_ray.experiments.speed import POOL_WORKLOADS

        workloads = [n.strip() for n in args.workloads.split(",") if n.strip()]
        unknown = [w for w in workloads if w not in POOL_WORKLOADS]
        if unknown or not workloads:
            raise UsageError(f"--workloads: unknown workload(s) {unknown}; accepted: "
                             f"{', '.join(POOL_WORKLOADS)}")
        return workloads

    @staticmethod
    def _minibatches(args: argparse.Namespace) -> list[int]:
        try:
            sizes = [int(x) for x in args.minibatches.split(",") if x.strip()]
        except ValueError:
            sizes = []
        if not sizes or min(sizes) < 1 or max(sizes) > args.sequences:
            raise UsageError(f"--minibatches {args.minibatches!r}: accepted: comma-"
                             f"separated integers from 1 to --sequences {args.sequences}")
        return sizes

    def run(self, args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
        from iif_ray.experiments.speed import bench_pool, bench_scoring, bench_speed
        from iif_ray.ray_session import ray_session

        self.validate(args)
        if args.bench == "lm":
            from iif_ray.experiments.lm_speed import bench_lm

            bench_lm(args.model, sequences=args.sequences, minibatches=self._minibatches(args),
                     epochs=args.epochs, echo=console.print)
            return 0
        if args.bench == "sb3":
            with ray_session(args.address):
                bench_speed(self._presets(args), rounds=args.rounds,
                            num_envs_options=self._num_envs(args), echo=console.print)
            return 0
        if args.bench == "pool":
            with ray_session(args.address):
                try:
                    bench_pool(self._workloads(args), args.max_scorers, args.reps,
                               echo=console.print)
                except ValueError as e:  # a pool larger than the cluster: refused, not waited
                    raise UsageError(str(e)) from None
            return 0
        names = self._presets(args)
        with ray_session(args.address):
            if args.gpu:
                import ray

                if ray.cluster_resources().get("GPU", 0) < 1:
                    raise UsageError("--gpu needs a GPU; this Ray has none")
            bench_scoring(names, rounds=args.rounds, echo=console.print,
                          devices=(0.0, 1.0) if args.gpu else (0.0,))
        return 0

