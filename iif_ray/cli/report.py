"""``iif-ray report``: ``report.md`` and PNG curves from a results directory's rounds files."""

from __future__ import annotations

import argparse

from iif_ray.cli.base import Command
from iif_ray.cli.common import UsageError, console


class ReportCommand(Command):
    name = "report"
    joins_ray = False
    help = "report.md and PNG curves from a sweep's rounds.csv"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("directory")

    def run(self, args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
        from iif_ray.reporting.report import write_report

        try:
            path = write_report(args.directory)
        except (FileNotFoundError, ValueError) as e:
            raise UsageError(str(e)) from None
        console.print(f"wrote {path} and its PNG curves")
        return 0
