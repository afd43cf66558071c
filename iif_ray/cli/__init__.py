"""``iif-ray`` command line: one module per command, each a :class:`~iif_ray.cli.base.Command`.

Arguments are validated before Ray starts, so a typo fails in a second with one message that
names the bad value, instead of after a cluster connection.
"""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Sequence

from iif_ray.cli.base import Command
from iif_ray.cli.bench import BenchCommand
from iif_ray.cli.common import Parser, UsageError, quiet_libraries
from iif_ray.cli.demo import DemoCommand
from iif_ray.cli.diagnose import DiagnoseCommand
from iif_ray.cli.evaluate import EvaluateCommand
from iif_ray.cli.lm_checks import LMChecksCommand
from iif_ray.cli.report import ReportCommand
from iif_ray.cli.submit import SubmitCommand
from iif_ray.cli.sweep import SweepCommand
from iif_ray.cli.train import TrainCommand
from iif_ray.cli.train_lm import TrainLMCommand
from iif_ray.ray_session import check_reachable

COMMANDS: tuple[Command, ...] = (TrainCommand(), TrainLMCommand(), DemoCommand(),
                                 BenchCommand(), SweepCommand(), EvaluateCommand(),
                                 ReportCommand(), DiagnoseCommand(), SubmitCommand(),
                                 LMChecksCommand())


def build_parser() -> argparse.ArgumentParser:
    """The ``iif-ray`` parser with every command's subparser."""
    parser = Parser(
        prog="iif-ray",
        description="influence-filtered PPO (IIF) and local data attribution on Ray RLlib")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        subparser = sub.add_parser(command.name, help=command.help,
                                   description=command.description)
        command.add_arguments(subparser)
        subparser.set_defaults(command_object=command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``iif-ray`` script; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as e:
        print(f"{_prog(argv)}: error: {e}", file=sys.stderr)
        return 2
    quiet_libraries()
    command = args.command_object
    try:
        if command.joins_ray:
            # Before anything is written: an unreachable cluster would make Ray retry forever.
            try:
                check_reachable(getattr(args, "address", None))
            except (ValueError, ConnectionError) as e:
                raise UsageError(f"--address: {e}") from None
        return command.run(args, parser)
    except UsageError as e:
        print(f"iif-ray {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        full = _disk_full(e)
        if full is None:
            raise
        where = getattr(args, "resume", None) or getattr(args, "out", None) or full.filename
        print(f"iif-ray {args.command}: error: no space left on the device of "
              f"{str(where)!r} ({full.strerror}); what was written before is whole, a run "
              "continues from its last checkpoint with --resume once there is space",
              file=sys.stderr)
        return 1


def _disk_full(error: BaseException) -> OSError | None:
    """The full-disk error behind ``error`` (its causes, or a Ray task's error), if any."""
    seen: set[int] = set()
    todo: list[object] = [error]
    while todo:
        e = todo.pop()
        if not isinstance(e, BaseException) or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return e
        todo += [e.__cause__, e.__context__, getattr(e, "cause", None)]
    return None


def _prog(argv: Sequence[str] | None) -> str:
    """``iif-ray <command>`` for an error line, as far as the command line names one."""
    words = list(sys.argv[1:] if argv is None else argv)
    known = {c.name for c in COMMANDS}
    return "iif-ray " + words[0] if words and words[0] in known else "iif-ray"
