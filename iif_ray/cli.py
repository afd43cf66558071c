"""``iif-ray`` command line.

Arguments are validated before Ray starts, so a typo fails in a second with one message that
names the bad value, instead of after a cluster connection.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from iif_ray.attribution.selection import SELECTION_RULES, check_drop_fraction
from iif_ray.presets import ALGOS, BENCHMARK_ALGOS, PRESETS, Preset, preset_for

console = Console(stderr=False, highlight=False, width=120)


def _quiet_libraries() -> None:
    """Keep the terminal for our progress lines: RLlib and gymnasium are chatty at WARNING."""
    import logging
    import warnings

    for name in ("ray", "ray.rllib", "ray.tune"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="gymnasium")
    warnings.filterwarnings("ignore", category=DeprecationWarning)


class UsageError(ValueError):
    """Bad command-line input; reported as one line, exit status 2."""


def _int_at_least(minimum: int, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{what} must be >= {minimum}, got {text!r}")
        return value

    return parse


def _nonneg_float(what: str):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0:
            raise argparse.ArgumentTypeError(f"{what} must be a number >= 0, got {text!r}")
        return value

    return parse


def _int_list(text: str) -> list[int]:
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        values = []
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError(f"expected rounds >= 1 like 2,5,10, got {text!r}")
    return values


def _drop_fraction(text: str) -> float:
    try:
        return check_drop_fraction(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"drop fraction must be in [0, 1), got {text!r}") from None


def _key_value(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key, value


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", help="gymnasium id (paper presets apply to their own env ids)")
    p.add_argument("--preset", help=f"paper preset: {', '.join(PRESETS)}")
    p.add_argument("--timesteps", type=_int_at_least(1, "timesteps"),
                   help="env-step budget (default: the preset's paper budget)")
    p.add_argument("--selection", choices=SELECTION_RULES, help="override the selection rule")
    p.add_argument("--drop-fraction", type=_drop_fraction, help="p in [0, 1)")
    p.add_argument("--target", help="target function (return, action, or a registered name)")
    p.add_argument("--target-option", type=_key_value, action="append", default=[],
                   metavar="KEY=VALUE", help="target option, e.g. action=2 or probe_file=p.npz")
    p.add_argument("--num-scorers", type=_int_at_least(0, "num-scorers"),
                   help="scorer actors (0: score in the learner process)")
    p.add_argument("--num-env-runners", type=_int_at_least(0, "num-env-runners"), default=0)
    p.add_argument("--num-learners", type=_int_at_least(0, "num-learners"), default=0,
                   help="remote learner actors (0: learn in the driver process)")
    p.add_argument("--num-gpus-per-learner", type=_nonneg_float("num-gpus-per-learner"),
                   default=0.0, help="GPUs per learner: the PPO update and in-learner scoring")
    p.add_argument("--num-gpus-per-scorer", type=_nonneg_float("num-gpus-per-scorer"),
                   help="GPUs per scorer actor (with --num-scorers > 0)")
    p.add_argument("--ledger-obs", action="store_true", help="store observations in the ledger")
    p.add_argument("--mode", choices=("filter", "score", "off"),
                   help="filter: score and drop (IIF); score: score and log, train on all")
    p.add_argument("--address", help="Ray address: omit for an embedded local Ray; 'auto' or a "
                                     "URL for a cluster")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iif-ray", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train IIF or PPO on one environment")
    _add_run_args(train)
    train.add_argument("--algo", choices=ALGOS, default="iif")
    train.add_argument("--seed", type=_int_at_least(0, "seed"), default=0)
    train.add_argument("--out", required=True, help="run directory to create")
    train.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")

    demo = sub.add_parser("demo", help="short IIF-vs-PPO comparison with a side-by-side table")
    _add_run_args(demo)
    demo.add_argument("--seeds", type=_int_at_least(1, "seeds"), default=1)
    demo.add_argument("--out", default="runs/demo", help="parent directory for the runs")
    demo.set_defaults(preset_default="cartpole", timesteps_default=40_960)

    bench = sub.add_parser("bench", help="print benchmark figures")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    scoring = bench_sub.add_parser("scoring", help="scoring vs PPO update seconds per round")
    scoring.add_argument("--presets", default="lunarlander,minigrid")
    scoring.add_argument("--rounds", type=_int_at_least(2, "rounds"), default=4)
    scoring.add_argument("--gpu", action="store_true",
                         help="also run each preset with the learner on a GPU, side by side")
    scoring.add_argument("--address")
    pool = bench_sub.add_parser("pool", help="records/s: in-process scoring vs scorer actors")
    pool.add_argument("--workloads", default="lunarlander-2k,mlp3x512-16k,minigrid-cnn-64k")
    pool.add_argument("--max-scorers", type=_int_at_least(1, "max-scorers"),
                      help="largest pool (default: the cluster's CPU count)")
    pool.add_argument("--reps", type=_int_at_least(1, "reps"), default=3)
    pool.add_argument("--address")
    sb3 = bench_sub.add_parser("sb3", help="seconds per PPO round: ours vs Stable-Baselines3")
    sb3.add_argument("--presets", default="lunarlander,acrobot")
    sb3.add_argument("--rounds", type=_int_at_least(2, "rounds"), default=5)
    sb3.add_argument("--num-envs", default="1,8", help="sampling layouts to compare")
    sb3.add_argument("--address")

    sweep = sub.add_parser("sweep", help="run (or resume) a Tune sweep from tune_experiments/")
    sweep.add_argument("sweep", help="sweep name (tune_experiments/<name>.py) or file path")
    sweep.add_argument("--envs", default="", help="comma-separated presets (default: sweep's)")
    sweep.add_argument("--algos", default=",".join(BENCHMARK_ALGOS))
    sweep.add_argument("--seeds", type=_int_at_least(1, "seeds"), default=3)
    sweep.add_argument("--first-seed", type=_int_at_least(0, "first-seed"), default=0)
    sweep.add_argument("--budget-scale", type=float, default=1.0,
                       help="fraction of each preset's paper budget, in (0, 10]")
    sweep.add_argument("--eval-episodes", type=_int_at_least(1, "eval-episodes"))
    sweep.add_argument("--num-envs", type=_int_at_least(1, "num-envs"), default=1)
    sweep.add_argument("--max-concurrent", type=_int_at_least(1, "max-concurrent"))
    sweep.add_argument("--out", default="runs/sweep")
    sweep.add_argument("--address")

    report = sub.add_parser("report", help="report.md and PNG curves from a sweep's rounds.csv")
    report.add_argument("directory")

    diagnose = sub.add_parser(
        "diagnose", help="plots of what drove or harmed learning in a run (RUN/diagnostics/)")
    diagnose.add_argument("run", help="run directory of iif-ray train (best with --ledger-obs)")
    diagnose.add_argument("--intervene", type=_int_list, metavar="K1,K2,...",
                          help="rounds to retrain unfiltered / without harmful / without "
                               "random records")
    diagnose.add_argument("--seeds", type=_int_at_least(1, "seeds"), default=3,
                          help="seeds of the intervention")
    diagnose.add_argument("--episodes", type=_int_at_least(1, "episodes"), default=100,
                          help="evaluation episodes per intervention variant (return target)")
    diagnose.add_argument("--probes-out", metavar="FILE.parquet",
                          help="instead: write a probe file of the states where the agent "
                               "chose --probe-action in --probe-round")
    diagnose.add_argument("--probe-round", type=_int_at_least(1, "probe-round"))
    diagnose.add_argument("--probe-action", type=_int_at_least(0, "probe-action"))
    diagnose.add_argument("--address", help="Ray address for --intervene (default: embedded)")

    submit = sub.add_parser(
        "submit", help="run an iif-ray command on a Ray cluster as a Ray job",
        description="Submit `-- iif-ray <command> ...` as a Ray job (the checkout ships as "
                    "working_dir), stream its logs and exit with the job's status.")
    submit.add_argument("--address", help="job API address, e.g. http://127.0.0.1:8265 "
                                          "(default: RAY_ADDRESS, then the local head)")
    submit.add_argument("--no-wait", action="store_true",
                        help="return after submission; print how to follow the job")
    submit.add_argument("--entrypoint-num-cpus", type=float,
                        help="CPUs reserved for the driver (default: none, runs on the head)")
    submit.add_argument("job", nargs=argparse.REMAINDER, metavar="-- iif-ray COMMAND ...")
    return parser


def _resolve_preset(args: argparse.Namespace) -> Preset:
    preset_name = args.preset
    if preset_name is None and args.env is None:
        preset_name = getattr(args, "preset_default", None)
    if preset_name is None and args.env is None:
        raise UsageError("give --env or --preset")
    try:
        return preset_for(preset_name, args.env)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _attribution_overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if args.selection is not None:
        out["selection"] = args.selection
    if args.drop_fraction is not None:
        out["drop_fraction"] = args.drop_fraction
    if args.target is not None:
        out["target"] = args.target
    if args.target_option:
        out["target_options"] = dict(args.target_option)
    if args.num_scorers is not None:
        out["num_scorers"] = args.num_scorers
    if args.ledger_obs:
        out["ledger_obs"] = True
    if args.mode is not None:
        out["mode"] = args.mode
    if args.num_gpus_per_scorer is not None:
        out["num_gpus_per_scorer"] = args.num_gpus_per_scorer
    from iif_ray.settings import AttributionSettings

    try:
        AttributionSettings.from_dict(out)  # validate now, before Ray starts
    except ValueError as e:
        raise UsageError(str(e)) from None
    return out


def _fmt(value: float | None, spec: str = ".1f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def _round_printer(label: str, budget: int):
    console.print(f"[bold]{label}[/bold]  budget {budget:,} env steps")
    console.print(f"{'round':>5} {'env_steps':>10} {'return':>9} {'dropped':>8} "
                  f"{'scoring_s':>9} {'update_s':>8} {'round_s':>8}")

    def on_round(row: dict) -> None:
        console.print(
            f"{row['iteration']:>5} {row['env_steps']:>10,} {_fmt(row['episode_return_mean']):>9} "
            f"{_fmt(row['frac_dropped'], '.3f'):>8} {_fmt(row['scoring_s'], '.3f'):>9} "
            f"{_fmt(row['update_s'], '.2f'):>8} {_fmt(row['iter_s'], '.2f'):>8}"
        )

    return on_round


def _resources(args: argparse.Namespace) -> dict[str, Any]:
    return {"num_env_runners": args.num_env_runners, "num_learners": args.num_learners,
            "num_gpus_per_learner": args.num_gpus_per_learner}


def _check_gpus(args: argparse.Namespace, overrides: dict[str, Any]) -> None:
    """On an embedded Ray, missing GPUs are a usage error now, not a hang later.

    (A cluster may still be scaling up GPU nodes, so there the request goes through.)
    """
    import os

    import ray

    if args.address is not None or os.environ.get("RAY_ADDRESS"):
        return
    learners = max(args.num_learners, 1) * args.num_gpus_per_learner
    scorers = overrides.get("num_scorers", 0) * overrides.get("num_gpus_per_scorer", 0.0)
    have = ray.cluster_resources().get("GPU", 0.0)
    if learners + scorers > have:
        raise UsageError(
            f"--num-gpus-per-learner {args.num_gpus_per_learner} and --num-gpus-per-scorer "
            f"{overrides.get('num_gpus_per_scorer', 0.0)} need {learners + scorers:g} GPU(s); "
            f"this machine's Ray has {have:g} (accepted: at most {have:g} in total)")


def cmd_train(args: argparse.Namespace) -> int:
    from iif_ray.ray_session import ray_session
    from iif_ray.training import RunSpec, prepare_out_dir, run

    preset = _resolve_preset(args)
    overrides = _attribution_overrides(args)
    try:
        out = prepare_out_dir(args.out, overwrite=args.overwrite)
    except FileExistsError as e:
        raise UsageError(str(e)) from None
    spec = RunSpec(preset=preset, algo=args.algo, seed=args.seed, timesteps=args.timesteps,
                   out_dir=str(out), attribution=overrides, **_resources(args))
    with ray_session(args.address):
        _check_gpus(args, overrides)
        summary = run(spec, _round_printer(f"{args.algo} on {preset.env_id} (seed {args.seed})",
                                           spec.budget))
    console.print(f"final return {_fmt(summary['final_return'])} after "
                  f"{summary['env_steps']:,} env steps in {summary['wall_s']:.1f} s")
    scorers = [s for lr in summary["resources"]["learners"] for s in lr["scorers"]]
    if scorers:
        nodes = sorted({s["node_id"][:12] for s in scorers})
        console.print(f"{len(scorers)} scorer actor(s) ran on node(s) {', '.join(nodes)}")
    console.print(f"results in {out}/ (summary.json, progress.csv, ledger/, checkpoint/)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from iif_ray.ray_session import ray_session
    from iif_ray.training import RunSpec, prepare_out_dir, run

    preset = _resolve_preset(args)
    overrides = _attribution_overrides(args)
    timesteps = args.timesteps or args.timesteps_default
    parent = prepare_out_dir(args.out, overwrite=True)
    summaries = []
    with ray_session(args.address):
        _check_gpus(args, overrides)
        for seed in range(args.seeds):
            for algo in ("ppo", "iif"):
                spec = RunSpec(preset=preset, algo=algo, seed=seed, timesteps=timesteps,
                               out_dir=str(parent / f"{algo}-seed{seed}"),
                               attribution=overrides, **_resources(args))
                summaries.append(run(spec, _round_printer(
                    f"{algo} on {preset.env_id} (seed {seed})", timesteps)))
    console.print(comparison_table(summaries, preset))
    console.print(f"runs in {parent}/")
    return 0


def comparison_table(summaries: list[dict], preset: Preset) -> Table:
    table = Table(title=f"IIF vs PPO on {preset.env_id} (p={preset.drop_fraction})")
    for col in ("algo", "seed", "final return", "best return", "env steps", "wall s",
                "update s/round", "frac dropped"):
        table.add_column(col, justify="right")
    for s in summaries:
        table.add_row(s["algo"], str(s["seed"]), _fmt(s["final_return"]),
                      _fmt(s["best_return"]), f"{s['env_steps']:,}", _fmt(s["wall_s"]),
                      _fmt(s["mean_update_s"], ".3f"), _fmt(s["mean_frac_dropped"], ".3f"))
    return table


def cmd_bench(args: argparse.Namespace) -> int:
    from iif_ray.bench import POOL_WORKLOADS, bench_pool, bench_scoring
    from iif_ray.presets import get_preset
    from iif_ray.ray_session import ray_session

    if args.bench == "sb3":
        from iif_ray.baselines import bench_speed

        layouts = tuple(int(x) for x in args.num_envs.split(",") if x)
        with ray_session(args.address):
            bench_speed([n.strip() for n in args.presets.split(",") if n.strip()],
                        rounds=args.rounds, num_envs_options=layouts, echo=console.print)
        return 0
    if args.bench == "pool":
        workloads = [n.strip() for n in args.workloads.split(",") if n.strip()]
        unknown = [w for w in workloads if w not in POOL_WORKLOADS]
        if unknown:
            raise UsageError(f"unknown workload(s) {unknown}; available: {list(POOL_WORKLOADS)}")
        with ray_session(args.address):
            bench_pool(workloads, args.max_scorers, args.reps, echo=console.print)
        return 0
    names = [n.strip() for n in args.presets.split(",") if n.strip()]
    try:
        for n in names:
            get_preset(n)
    except ValueError as e:
        raise UsageError(str(e)) from None
    with ray_session(args.address):
        if args.gpu:
            import ray

            if ray.cluster_resources().get("GPU", 0) < 1:
                raise UsageError("--gpu needs a GPU; this Ray has none")
        bench_scoring(names, rounds=args.rounds, echo=console.print,
                      devices=(0.0, 1.0) if args.gpu else (0.0,))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from iif_ray.ray_session import ray_session
    from iif_ray.sweeps import SweepError, SweepOptions, load_sweep, run_sweep

    try:
        opts = SweepOptions(
            envs=[e for e in args.envs.split(",") if e], algos=[a for a in args.algos.split(",")
                                                               if a],
            seeds=args.seeds, first_seed=args.first_seed, budget_scale=args.budget_scale,
            out=args.out, max_concurrent=args.max_concurrent, num_envs=args.num_envs,
            eval_episodes=args.eval_episodes)
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


def cmd_report(args: argparse.Namespace) -> int:
    from iif_ray.report import write_report

    try:
        path = write_report(args.directory)
    except FileNotFoundError as e:
        raise UsageError(str(e)) from None
    console.print(f"wrote {path} and its PNG curves")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from iif_ray.jobs import SubmitError, stream_to_stdout, submit

    command = args.job[1:] if args.job[:1] == ["--"] else args.job
    try:
        result = submit(command, address=args.address, wait=not args.no_wait,
                        entrypoint_num_cpus=args.entrypoint_num_cpus, log=console.print,
                        stream=stream_to_stdout)
    except SubmitError as e:
        raise UsageError(str(e)) from None
    if result.exit_code is None:
        return 0
    console.print(f"job {result.job_id} {result.status.lower()} (exit status {result.exit_code})")
    return result.exit_code


def cmd_diagnose(args: argparse.Namespace) -> int:
    from iif_ray.diagnostics import diagnose, write_probes

    try:
        if args.probes_out:
            if args.probe_round is None or args.probe_action is None:
                raise UsageError("--probes-out needs --probe-round and --probe-action")
            n = write_probes(args.run, args.probes_out, args.probe_round, args.probe_action)
            console.print(f"wrote {n} probe states to {args.probes_out}; use it with "
                          f"--target action --target-option probe_file={args.probes_out}")
            return 0
        if args.intervene:
            from iif_ray.ray_session import ray_session

            with ray_session(args.address):
                index = diagnose(args.run, intervene_rounds=args.intervene, seeds=args.seeds,
                                 episodes=args.episodes, echo=console.print)
        else:
            index = diagnose(args.run, echo=console.print)
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from None
    console.print(f"wrote {index} and its plots")
    return 0


COMMANDS = {"train": cmd_train, "demo": cmd_demo, "bench": cmd_bench, "sweep": cmd_sweep,
            "report": cmd_report, "submit": cmd_submit, "diagnose": cmd_diagnose}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet_libraries()
    try:
        return COMMANDS[args.command](args)
    except UsageError as e:
        print(f"iif-ray {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
