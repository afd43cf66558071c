"""``iif-ray submit``: run an ``iif-ray`` command on a Ray cluster as a Ray job."""

from __future__ import annotations

import argparse

from iif_ray.cli.base import Command
from iif_ray.cli.common import UsageError, console


class SubmitCommand(Command):
    name = "submit"
    joins_ray = False
    help = "run an iif-ray command on a Ray cluster as a Ray job"
    description = ("Submit `-- iif-ray <command> ...` as a Ray job (the checkout ships as "
                   "working_dir), stream its logs and exit with the job's status.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--address", help="job API address, e.g. http://127.0.0.1:8265 "
                                              "(default: RAY_ADDRESS, then the local head)")
        parser.add_argument("--no-wait", action="store_true",
                            help="return after submission; print how to follow the job")
        parser.add_argument("--entrypoint-num-cpus", type=float,
                            help="CPUs reserved for the driver (default: none, runs on the head)")
        parser.add_argument("job", nargs=argparse.REMAINDER, metavar="-- iif-ray COMMAND ...")

    def run(self, args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
        from iif_ray.cluster.jobs import SubmitError, parse_job_command, stream_to_stdout, submit

        command = args.job[1:] if args.job[:1] == ["--"] else args.job
        try:
            job = parse_job_command(command, parser)
            # Everything the command checks locally (presets, env ids, values) fails here,
            # before the checkout is uploaded.
            job_args = parser.parse_args(job.argv)
            job_args.command_object.validate(job_args, here=False)
            result = submit(job, address=args.address, wait=not args.no_wait,
                            entrypoint_num_cpus=args.entrypoint_num_cpus, log=console.print,
                            stream=stream_to_stdout)
        except SubmitError as e:
            raise UsageError(str(e)) from None
        if result.exit_code is None:
            return 0
        console.print(f"job {result.job_id} {result.status.lower()} "
                      f"(exit status {result.exit_code})")
        return result.exit_code
