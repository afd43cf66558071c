"""``iif-ray train-lm``: IIF (or PPO, or the random control) for a language-model policy.

The default task is detox-mini (``iif_ray.lm.detox``); ``--task arith`` trains digit
addition with an exact, optionally corrupted reward (``iif_ray.lm.arith``). ``--model``
points at any local Hugging Face causal-LM directory instead of the task's pre-trained tiny
model.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from iif_ray.cli.base import Command
from iif_ray.cli.common import UsageError, check_local_gpus, console, prepare_out
from iif_ray.cli.flags import add_address, add_flags, add_run_dir, flag_name, given, resume_dir
from iif_ray.lm.generation import SamplingSettings
from iif_ray.lm.learner import UpdateSettings
from iif_ray.lm.spec import PLACEMENT, LMRunSpec
from iif_ray.lm.tasks import task_spec

# The settings train-lm takes flags from: the run spec and its two nested settings.
SETTINGS = {"update": UpdateSettings, "sampling": SamplingSettings}


def spec_from_flags(args: argparse.Namespace, model: str, out_dir: str) -> LMRunSpec:
    """A new run's spec: the flags given, the task's defaults, then the dataclasses'.

    Raises:
        UsageError: a combination the spec refuses (its message names the fields).
    """
    given_spec = given(args, LMRunSpec)
    if given_spec.get("prompts"):
        given_spec["prompts"] = str(Path(given_spec["prompts"]).resolve())
    task = given_spec.pop("task", "detox")
    try:  # the task's defaults (iif_ray.lm.tasks.TASK_DEFAULTS) under the flags given
        return task_spec(task, model, out_dir, **given_spec,
                         **{name: given(args, cls) for name, cls in SETTINGS.items()})
    except ValueError as e:
        raise UsageError(str(e)) from None


def resume_spec(args: argparse.Namespace) -> LMRunSpec:
    """The resumed run's spec, with the placement flags given on this command line.

    Raises:
        UsageError: a flag that would change what the run trains, naming the stored value
            (a resumed run continues what it started; only placement may change).
    """
    from dataclasses import asdict, replace

    from iif_ray.lm.spec import read_spec

    spec = read_spec(args.resume)
    stored = asdict(spec)  # the nested update and sampling settings as dicts too
    given_spec = given(args, LMRunSpec)
    changes = [(LMRunSpec, given_spec, stored)] + [
        (cls, given(args, cls), stored[name]) for name, cls in SETTINGS.items()]
    for cls, values, old in changes:
        for field_name, value in values.items():
            if field_name not in PLACEMENT and value != old[field_name]:
                raise UsageError(
                    f"{flag_name(cls, field_name)} {value} conflicts with the run's stored "
                    f"{field_name}={old[field_name]!r}; with --resume only "
                    f"{', '.join(flag_name(LMRunSpec, f) for f in PLACEMENT)} may change")
    if args.model is not None and args.model != spec.model:
        raise UsageError(f"--model {args.model!r} conflicts with the run's stored model "
                         f"{spec.model!r}; a resumed run keeps its model")
    placement = {k: v for k, v in given_spec.items() if k in PLACEMENT}
    return replace(spec, **placement)


class TrainLMCommand(Command):
    name = "train-lm"
    help = "IIF, PPO or the random control for a language-model policy (detox-mini, arith)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--model", help="local Hugging Face causal-LM directory (default: "
                                            "the task's tiny model, pre-trained once)")
        parser.add_argument("--model-cache", default="runs/lm-models",
                            help="where the task's tiny models are pre-trained and kept")
        add_flags(parser.add_argument_group("the run"), LMRunSpec)
        for name, cls in SETTINGS.items():
            add_flags(parser.add_argument_group(f"the {name}"), cls)
        add_run_dir(parser, what="LM run")
        add_address(parser)

    def validate(self, args: argparse.Namespace, *, here: bool = True) -> None:
        try:
            args.resume = resume_dir(args)  # --out DIR --resume names DIR too
        except ValueError as e:
            raise UsageError(str(e)) from None
        if args.resume is not None:
            args.out = None  # the run to continue is args.resume
        if args.resume and here:
            from iif_ray.run import RUN_SPEC, SUMMARY, is_complete

            try:
                spec = resume_spec(args)  # migrates a directory with the old LM file names
            except FileNotFoundError:
                raise UsageError(f"--resume {args.resume!r} holds no LM run (no {RUN_SPEC}); "
                                 "accepted: a directory an earlier train-lm wrote") from None
            except ValueError as e:  # the other engine's run, or a spec this one refuses
                raise UsageError(f"--resume {args.resume!r}: {e}") from None
            if is_complete(args.resume):
                raise UsageError(f"--resume {args.resume!r} already completed ({SUMMARY} "
                                 "exists); accepted: an interrupted run")
            self._check_gpus(args, spec)
            return
        spec = spec_from_flags(args, model=args.model or "", out_dir=args.out or "")
        if spec.prompts and here:
            from iif_ray.lm.prompts import PromptFile, PromptFileError

            try:
                PromptFile(spec.prompts)
            except PromptFileError as e:
                raise UsageError(str(e)) from None
        if here:
            self._check_gpus(args, spec)
        for flag, path in (("--model", args.model), ("--reward", args.reward)):
            if path and here and not (Path(path) / "config.json").is_file():
                raise UsageError(f"{flag} {path!r} is not a local model directory (no "
                                 "config.json); accepted: a directory written by "
                                 "save_pretrained")

    @staticmethod
    def _check_gpus(args: argparse.Namespace, spec: LMRunSpec) -> None:
        """On an embedded Ray, this machine's GPUs, checked before Ray starts (an actor Ray
        cannot place would otherwise wait). Ray's rule for one reservation is the spec's."""
        if args.address is not None or os.environ.get("RAY_ADDRESS"):
            return  # a cluster's GPUs are the cluster's to count
        check_local_gpus(
            spec.rollout_gpus + spec.learner_gpus + spec.num_scorers * spec.gpus_per_scorer,
            "the rollout, learner and scorer actors ask for",
            hint="; with --resume, --num-gpus-per-* 0 continues on CPU")

    def run(self, args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
        from iif_ray.lm.trainer import fit
        from iif_ray.ray_session import ray_session

        self.validate(args)
        if args.resume:
            spec = resume_spec(args)
            with ray_session(args.address):
                summary = fit(spec, echo=console.print, resume=True)
            return self._report(spec.algo, Path(args.resume), summary)
        out = prepare_out(args.out, args.overwrite)
        model = args.model
        if model is None:
            from iif_ray.lm.pretrain import arith_model, detox_model

            pretrained = arith_model if args.task == "arith" else detox_model
            model = str(pretrained(args.model_cache, echo=console.print))
        spec = spec_from_flags(args, model=model, out_dir=str(out))
        with ray_session(args.address):
            summary = fit(spec, echo=console.print)
        return self._report(spec.algo, out, summary)

    @staticmethod
    def _report(algo: str, out: Path, summary: dict) -> int:
        from iif_ray.run import progress_path

        last = summary["rounds"][-1]
        console.print(f"{algo}: reward {last['reward_mean']:.3f} in round {last['round']}; "
                      f"per-round figures in {progress_path(out)}")
        return 0
