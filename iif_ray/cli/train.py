"""``iif-ray train``: one run of IIF, PPO or a control, to its budget, into a run directory."""

from __future__ import annotations

import argparse
from pathlib import Path

from iif_ray.cli.base import Command
from iif_ray.cli.common import (
    RESOURCE_DEFAULTS,
    UsageError,
    add_run_args,
    checked_run_inputs,
    console,
    fmt,
    int_at_least,
    owned_dir,
    round_printer,
    train_runs,
)
from iif_ray.cli.flags import add_run_dir, flag_name, given, resume_dir
from iif_ray.presets import ALGOS
from iif_ray.rllib.settings import AttributionSettings

# What a new run takes when --algo / --seed are not given (None: "not given", so --resume can
# tell a flag the user gave from a default).
DEFAULT_ALGO, DEFAULT_SEED, DEFAULT_CHECKPOINT_EVERY = "iif", 0, 10


class TrainCommand(Command):
    name = "train"
    help = "train IIF or PPO on one environment"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_run_args(parser)
        parser.add_argument("--algo", choices=ALGOS,
                            help=f"the filter or a control (default {DEFAULT_ALGO})")
        parser.add_argument("--seed", type=int_at_least(0, "seed"),
                            help=f"the run's seed (default {DEFAULT_SEED})")
        add_run_dir(parser)
        parser.add_argument("--checkpoint-every", type=int_at_least(1, "checkpoint-every"),
                            help=f"rounds between checkpoints, what --resume restarts from "
                                 f"(default {DEFAULT_CHECKPOINT_EVERY})")

    def validate(self, args: argparse.Namespace, *, here: bool = True) -> None:
        resume = _resume_dir(args)
        if resume is None:
            checked_run_inputs(args, here=here)
        elif here:
            self._stored_spec(args, resume)

    def run(self, args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
        from iif_ray.run import CONTENTS, NEW

        # Each branch checks its own inputs first (checked_run_inputs, _stored_spec), before
        # Ray starts: validate() would only do the same work twice.
        resume = _resume_dir(args)
        if resume is not None:
            summary, out = self._resume(args, resume)
        else:
            preset, overrides = checked_run_inputs(args)
            algo = args.algo or DEFAULT_ALGO
            seed = DEFAULT_SEED if args.seed is None else args.seed
            with owned_dir(args.out, mode=NEW, overwrite=args.overwrite,
                           command=self.name) as out:
                [summary] = train_runs(args, preset, [(algo, seed, str(out))],
                                       args.timesteps, overrides,
                                       checkpoint_every=args.checkpoint_every
                                       or DEFAULT_CHECKPOINT_EVERY)
        console.print(f"final return {fmt(summary['final_return'])} after "
                      f"{summary['env_steps']:,} env steps in {summary['wall_s']:.1f} s")
        scorers = [s for lr in summary["resources"]["learners"] for s in lr["scorers"]]
        if scorers:
            nodes = sorted({s["node_id"][:12] for s in scorers})
            console.print(f"{len(scorers)} scorer actor(s) ran on node(s) {', '.join(nodes)}")
        console.print(f"results in {out}/ ({CONTENTS})")
        return 0

    @staticmethod
    def _stored_spec(args: argparse.Namespace, resume: str) -> dict:
        """The resumed run's spec; a flag that would change what it trains is refused,
        naming the stored value (a resumed run continues what it started)."""
        from iif_ray.run import CLASSIC, check_checkpoint, read_run_spec

        try:
            spec = read_run_spec(Path(resume).resolve(), CLASSIC)
            check_checkpoint(resume)
        except (FileNotFoundError, ValueError) as e:
            raise UsageError(str(e)) from None
        preset = spec.get("preset")
        if not isinstance(preset, dict) or not {"name", "env_id"} <= set(preset) or not {
                "algo", "seed"} <= set(spec):
            raise UsageError(f"--resume {resume!r}: its run.json lacks the preset, algo or "
                             "seed; accepted: the run.json an iif-ray train run wrote")
        if args.preset or args.env:
            given_env = f"--preset {args.preset}" if args.preset else f"--env {args.env}"
            raise UsageError(f"{given_env} conflicts with the run's stored preset "
                             f"{spec['preset']['name']!r} ({spec['preset']['env_id']}); a "
                             "resumed run keeps its environment")
        stored_attr = spec.get("attribution") or {}
        changes = [("--algo", args.algo, spec["algo"]), ("--seed", args.seed, spec["seed"]),
                   *((_placement_flag(k), getattr(args, k), spec.get(k, default))
                     for k, default in RESOURCE_DEFAULTS.items()),
                   ("--timesteps", args.timesteps, spec.get("timesteps")),
                   ("--checkpoint-every", args.checkpoint_every,
                    spec.get("checkpoint_every", DEFAULT_CHECKPOINT_EVERY))
                   ] + [
            (flag_name(AttributionSettings, k), v, stored_attr.get(k, "the preset's"))
            for k, v in given(args, AttributionSettings).items()]
        for flag, value, stored in changes:
            if value is not None and value != stored:
                raise UsageError(f"{flag} {value} conflicts with the run's stored value "
                                 f"{stored!r}; with --resume only --address may be given")
        return spec

    def _resume(self, args: argparse.Namespace, resume: str) -> tuple[dict, Path]:
        from iif_ray.driver import resume as resume_run
        from iif_ray.ray_session import ray_session
        from iif_ray.run import EXISTING

        spec = self._stored_spec(args, resume)
        label = f"resuming {spec['algo']} on {spec['preset']['env_id']} (seed {spec['seed']})"
        with owned_dir(resume, mode=EXISTING, command=self.name, flag="--resume") as out, \
                ray_session(args.address):
            summary = resume_run(out, round_printer(
                label, int(spec.get("timesteps") or spec["preset"]["timesteps"])))
        return summary, out


def _placement_flag(dest: str) -> str:
    """``--num-env-runners`` for ``num_env_runners``: a placement flag of add_run_args."""
    return "--" + dest.replace("_", "-")


def _resume_dir(args: argparse.Namespace) -> str | None:
    """:func:`~iif_ray.cli.flags.resume_dir`, a bad combination as one usage line."""
    try:
        return resume_dir(args)
    except ValueError as e:
        raise UsageError(str(e)) from None
