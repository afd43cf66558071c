"""The shape of an ``iif-ray`` command: a name, its arguments, and what it runs."""

from __future__ import annotations

import argparse
from typing import ClassVar


class Command:
    """One subcommand. Subclasses set ``name`` and ``help`` and implement the two methods.

    ``run`` gets the whole ``iif-ray`` parser as well, for commands that parse another
    command line (``submit`` checks the job's command before sending it).
    """

    name: ClassVar[str]
    help: ClassVar[str]
    description: ClassVar[str | None] = None
    # Whether the command connects to Ray through ``--address`` (the CLI checks the address
    # first); ``submit`` talks to the job server instead.
    joins_ray: ClassVar[bool] = True

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        raise NotImplementedError

    def validate(self, args: argparse.Namespace, *, here: bool = True) -> None:
        """Check the command line without side effects; raise ``UsageError`` on a bad value.

        ``submit`` runs this on a job's command before uploading it, with ``here=False``:
        the job runs on the cluster, so this machine's resources are not the measure.
        """

    def run(self, args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
        """Run the command; return the process exit status.

        Raises:
            UsageError: bad input the parser could not catch (printed as one line, status 2).
        """
        raise NotImplementedError
