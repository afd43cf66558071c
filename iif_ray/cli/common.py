"""What the ``iif-ray`` commands share: argument types, run options, validation, output.

Every check here runs before Ray starts, so a typo fails in a second with one line that names
the bad value and the accepted range (exit status 2), instead of after a cluster connection.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import gymnasium as gym
from rich.console import Console

from iif_ray.cli.flags import add_address, add_flags, given
from iif_ray.envs import spaces
from iif_ray.presets import PRESETS, Preset, preset_for
from iif_ray.rllib.settings import AttributionSettings

console = Console(stderr=False, highlight=False, width=120)
# A classic run's placement when its flags are not given (RunSpec's defaults).
RESOURCE_DEFAULTS: dict[str, Any] = {"num_env_runners": 0, "num_learners": 0,
                                     "num_gpus_per_learner": 0.0}


def quiet_libraries() -> None:
    """Keep the terminal for our progress lines: RLlib and gymnasium are chatty at WARNING."""
    import logging
    import warnings

    for name in ("ray", "ray.rllib", "ray.tune"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="gymnasium")
    warnings.filterwarnings("ignore", category=DeprecationWarning)


class UsageError(ValueError):
    """Bad command-line input; reported as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse, with a parse error raised as one :class:`UsageError` line instead of a usage
    block and ``sys.exit`` (so ``submit`` can report a job's bad command the same way)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def int_at_least(minimum: int, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{what} must be >= {minimum}, got {text!r}")
        return value

    return parse


def _finite_float(what: str, ok: Callable[[float], bool], accepted: str):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or not ok(value):
            raise argparse.ArgumentTypeError(f"{what} must be {accepted}, got {text!r}")
        return value

    return parse


def nonneg_float(what: str):
    return _finite_float(what, lambda v: v >= 0, "a number >= 0")


def int_list(text: str) -> list[int]:
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        values = []
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError(f"expected rounds >= 1 like 2,5,10, got {text!r}")
    return values


def add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", help="gymnasium id (paper presets apply to their own env ids)")
    p.add_argument("--preset", help=f"paper preset: {', '.join(PRESETS)}")
    p.add_argument("--timesteps", type=int_at_least(1, "timesteps"),
                   help="env-step budget (default: the preset's paper budget)")
    group = p.add_argument_group("attribution (default: the preset's)")
    add_flags(group, AttributionSettings)
    # Default None ("not given"), so --resume can tell a flag the user gave from a default;
    # resources() fills in RESOURCE_DEFAULTS.
    p.add_argument("--num-env-runners", type=int_at_least(0, "num-env-runners"),
                   help=f"remote env runners (default {RESOURCE_DEFAULTS['num_env_runners']})")
    p.add_argument("--num-learners", type=int_at_least(0, "num-learners"),
                   help="remote learner actors (default 0: learn in the driver process)")
    p.add_argument("--num-gpus-per-learner", type=nonneg_float("num-gpus-per-learner"),
                   help="GPUs per learner: the PPO update and in-learner scoring (default 0)")
    add_address(p)


def resolve_preset(args: argparse.Namespace) -> Preset:
    preset_name = args.preset
    if preset_name is None and args.env is None:
        preset_name = getattr(args, "preset_default", None)
    if preset_name is None and args.env is None:
        raise UsageError("give --env or --preset")
    try:
        return preset_for(preset_name, args.env)
    except ValueError as e:
        raise UsageError(str(e)) from None


def attribution_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The attribution settings given on the command line, checked together (a target's
    options against the target) before Ray starts."""
    out = given(args, AttributionSettings)
    try:
        AttributionSettings.from_dict(out)
    except (ValueError, OSError) as e:  # OSError: an unreadable probe file
        raise UsageError(str(e)) from None
    return out


def fmt(value: float | None, spec: str = ".1f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def round_printer(label: str, budget: int):
    console.print(f"[bold]{label}[/bold]  budget {budget:,} env steps")
    console.print(f"{'round':>5} {'env_steps':>10} {'return':>9} {'dropped':>8} "
                  f"{'scoring_s':>9} {'update_s':>8} {'round_s':>8}")

    def on_round(row: dict) -> None:
        console.print(
            f"{row['round']:>5} {row['env_steps']:>10,} {fmt(row['episode_return_mean']):>9} "
            f"{fmt(row['frac_dropped'], '.3f'):>8} {fmt(row['scoring_s'], '.3f'):>9} "
            f"{fmt(row['update_s'], '.2f'):>8} {fmt(row['iter_s'], '.2f'):>8}"
        )

    return on_round


def resources(args: argparse.Namespace) -> dict[str, Any]:
    """The run's placement flags, each defaulted where not given."""
    return {k: default if getattr(args, k, None) is None else getattr(args, k)
            for k, default in RESOURCE_DEFAULTS.items()}


def check_run(args: argparse.Namespace, preset: Preset, overrides: dict[str, Any], *,
              here: bool = True) -> None:
    """What a run asks for, checked against the env and this machine before Ray starts.

    Budgets below one round, action ids outside the action space, and (on an embedded Ray,
    which gets this machine's CPUs and GPUs) resource requests it cannot meet would otherwise
    train silently wrong or wait for ever. A cluster may still be scaling up, so there the
    resource request goes through, and so it does with ``here=False`` (a job's command).
    """
    if args.timesteps is not None and args.timesteps < preset.steps_per_round:
        raise UsageError(f"--timesteps {args.timesteps} is less than one round; accepted: "
                         f">= {preset.steps_per_round} (the env steps of one round)")
    action = (overrides.get("target_options") or {}).get("action")
    if action is not None:
        space = spaces(preset.env_id, preset.env_kwargs)[1]
        if not isinstance(space, gym.spaces.Discrete):
            raise UsageError(f"--target-option action={action!r}: {preset.env_id} has a "
                             f"continuous action space ({space}); accepted: discrete ones")
        if isinstance(action, bool) or not isinstance(action, int) or not (
                space.start <= action < space.start + space.n):
            raise UsageError(f"--target-option action={action!r} is not an action of "
                             f"{preset.env_id}; accepted: integers {space.start}.."
                             f"{space.start + space.n - 1}")
    if not here or args.address is not None or os.environ.get("RAY_ADDRESS"):
        return
    num_scorers = overrides.get("num_scorers", 0) if overrides.get("mode") != "off" else 0
    res = resources(args)
    pools = max(1, res["num_learners"])
    cpus = os.cpu_count() or 1
    need = res["num_env_runners"] + res["num_learners"] + num_scorers * pools
    if need > cpus:
        raise UsageError(
            f"--num-scorers {num_scorers}, --num-env-runners {res['num_env_runners']} and "
            f"--num-learners {res['num_learners']} need {need} CPUs; the embedded Ray has "
            f"{cpus} (accepted: at most {cpus} in total, or --address for a cluster)")
    gpus_learners = max(res["num_learners"], 1) * res["num_gpus_per_learner"]
    gpus_scorers = num_scorers * pools * overrides.get("num_gpus_per_scorer", 0.0)
    check_local_gpus(gpus_learners + gpus_scorers,
                     f"--num-gpus-per-learner {res['num_gpus_per_learner']} and "
                     f"--num-gpus-per-scorer {overrides.get('num_gpus_per_scorer', 0.0)} need")


def check_local_gpus(gpus: float, who: str, hint: str = "") -> None:
    """Refuse, before an embedded Ray starts, GPUs this machine does not have (Ray would
    leave the actors pending). ``who`` begins the message ("... need"), ``hint`` ends it."""
    if gpus <= 0:
        return
    import torch

    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus > have:
        raise UsageError(f"{who} {gpus:g} GPU(s); this machine has {have} (accepted: at most "
                         f"{have} in total, or --address for a cluster{hint})")


def check_out(out: str, *, mode: str, overwrite: bool = False) -> None:
    """:func:`iif_ray.run.check_dir` as a usage error: a bad ``--out`` refused before a
    command's long preparations, without writing anything."""
    from iif_ray.run import OwnershipError, check_dir

    try:
        check_dir(out, mode=mode, overwrite=overwrite)
    except OwnershipError as e:
        raise UsageError(str(e)) from None


@contextmanager
def owned_dir(out: str, *, mode: str, command: str, overwrite: bool = False,
              markers: tuple[str, ...] | None = None, flag: str = "--out") -> Iterator[Path]:
    """Own a run directory for the command (:func:`iif_ray.run.own_dir`), a directory that
    cannot be owned (empty path, foreign, in use, unsafe to replace) refused as a usage error
    before anything is written."""
    from iif_ray.run import RUN_MARKERS, OwnershipError, own_dir

    with ExitStack() as stack:
        try:
            directory = stack.enter_context(own_dir(
                out, mode=mode, overwrite=overwrite, markers=markers or RUN_MARKERS,
                command=f"iif-ray {command}", flag=flag, echo=console.print))
        except OwnershipError as e:
            raise UsageError(str(e)) from None
        yield directory


def checked_run_inputs(args: argparse.Namespace, *, here: bool = True
                       ) -> tuple[Preset, dict[str, Any]]:
    """The preset and attribution overrides of a ``train``/``demo`` command line, every value
    checked (``submit`` runs this on a job's command before uploading anything)."""
    preset = resolve_preset(args)
    overrides = attribution_overrides(args)
    check_run(args, preset, overrides, here=here)
    return preset, overrides


def train_runs(args: argparse.Namespace, preset: Preset, runs: list[tuple[str, int, str]],
               timesteps: int | None, overrides: dict[str, Any],
               checkpoint_every: int = 10) -> list[dict[str, Any]]:
    """Train ``(algo, seed, out_dir)`` runs one after another on one Ray session, printing
    each round.

    Returns:
        The runs' summaries, in ``runs`` order.
    """
    from iif_ray.driver import RunSpec, run
    from iif_ray.ray_session import ray_session

    summaries = []
    with ray_session(args.address):
        for algo, seed, out in runs:
            spec = RunSpec(preset=preset, algo=algo, seed=seed, timesteps=timesteps,
                           out_dir=out, attribution=overrides, checkpoint_every=checkpoint_every,
                           **resources(args))
            summaries.append(run(spec, round_printer(
                f"{algo} on {preset.env_id} (seed {seed})", spec.budget)))
    return summaries
