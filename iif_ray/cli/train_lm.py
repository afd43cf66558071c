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
from iif_ray.cli.common import UsageError, check_local_gpus, check_out, console, owned_dir
from iif_ray.cli.flags import add_address, add_flags, add_run_dir, flag_name, given, resume_dir
from iif_ray.lm.generation import SamplingSettings
from iif_ray.lm.learner import UpdateSettings
from iif_ray.lm.spec import LM_PRESETS, PLACEMENT, LMRunSpec, preset_fields, task_spec

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
    preset: dict = {}
    if args.preset:
        preset = preset_fields(args.preset, given_spec.get("algo", "iif"))
    try:  # the task's defaults, the preset's values, then the flags given (a flag wins)
        nested = {name: {**preset.pop(name, {}), **given(args, cls)}
                  for name, cls in SETTINGS.items()}
        return task_spec(task, model, out_dir, **{**preset, **given_spec}, **nested)
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

    if args.preset:
        raise UsageError(f"--preset {args.preset} sets up a new run; a resumed run keeps the "
                         "settings it was started with (accepted: --resume without --preset)")
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
        parser.add_argument("--preset", choices=sorted(LM_PRESETS),
                            help="start from a recipe's settings; flags given override them "
                                 "(paper-rlhf: the paper's RLHF PPO, minibatch 1, Adam 1e-5, "
                                 "4 epochs, KL 0.04 -> 6 per sequence, 1,024 fixed validation "
                                 "prompts with reference responses, IIF drops every negative "
                                 "score)")
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
            from iif_ray.run import RUN_SPEC, SUMMARY, check_checkpoint, is_complete

            try:
                spec = resume_spec(args)  # migrates a directory with the old LM file names
                check_checkpoint(args.resume)
            except FileNotFoundError:
                raise UsageError(f"--resume {args.resume!r} holds no LM run (no {RUN_SPEC}); "
                                 "accepted: a directory an earlier train-lm wrote") from None
            except ValueError as e:  # the other engine's run, or a spec this one refuses
                raise UsageError(f"--resume {args.resume!r}: {e}") from None
            if is_complete(args.resume):
                raise UsageError(f"--resume {args.resume!r} already completed ({SUMMARY} "
                                 "exists); accepted: an interrupted run")
            self._check_resources(args, spec)
            self._check_files(spec, resumed=True)
            return
        if args.reward_label is not None and args.reward is None:
            raise UsageError(f"--reward-label {args.reward_label!r} needs --reward DIR (a "
                             "classifier with that label); detox-mini's reward has no labels")
        spec = spec_from_flags(args, model=args.model or "", out_dir=args.out or "")
        if here:
            self._check_resources(args, spec)
            self._check_files(spec)

    @staticmethod
    def _check_files(spec: LMRunSpec, *, resumed: bool = False) -> None:
        """The model, reward and prompt files the actors will load, checked now: a directory
        without weights or a prompts file that is not UTF-8 fails here in one line, not in a
        worker after Ray started (:mod:`iif_ray.lm.inputs`). A resumed run's files are the
        ones its spec stored (moved or deleted since, they are named as the run's)."""
        from iif_ray.lm.inputs import (
            InputError,
            check_policy_dir,
            check_prompts_fit,
            check_reward_dir,
        )
        from iif_ray.lm.prompts import PromptFile, PromptFileError

        try:
            prompts = PromptFile(spec.prompts) if spec.prompts else None
            model = (check_policy_dir(spec.model, "the run's model" if resumed else "--model")
                     if spec.model else None)
            if spec.reward:
                check_reward_dir(spec.reward, spec.reward_label,
                                 "the run's reward" if resumed else "--reward")
            if prompts is not None and model is not None:
                check_prompts_fit(prompts, model, spec.sampling.max_new_tokens)
        except (InputError, PromptFileError) as e:
            raise UsageError(str(e)) from None

    @classmethod
    def _check_resources(cls, args: argparse.Namespace, spec: LMRunSpec) -> None:
        """On an embedded Ray, this machine's CPUs and GPUs, checked before Ray starts: the
        rollout, learner and scorer actors hold theirs for the whole run, so an actor Ray
        cannot place would wait for ever (``train`` refuses the same)."""
        if args.address is not None or os.environ.get("RAY_ADDRESS"):
            return  # a cluster's resources are the cluster's to count (it may scale up)
        need = spec.rollout_cpus + spec.learner_cpus + spec.num_scorers * spec.cpus_per_scorer
        cpus = os.cpu_count() or 1
        if need > cpus:
            raise UsageError(
                f"--num-scorers {spec.num_scorers} (x --cpus-per-scorer "
                f"{spec.cpus_per_scorer:g}), --rollout-cpus {spec.rollout_cpus:g} and "
                f"--learner-cpus {spec.learner_cpus:g} need {need:g} CPUs; the embedded Ray "
                f"has {cpus} (accepted: at most {cpus} in total, or --address for a cluster)")
        cls._check_gpus(args, spec)

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
        from iif_ray.run import EXISTING, NEW

        self.validate(args)
        if args.resume:
            spec = resume_spec(args)
            with owned_dir(args.resume, mode=EXISTING, command=self.name,
                           flag="--resume") as out, ray_session(args.address):
                summary = fit(spec, echo=console.print, resume=True)
            return self._report(spec.algo, out, summary)
        check_out(args.out, mode=NEW, overwrite=args.overwrite)  # before a model is built
        model = args.model
        if model is None:
            from iif_ray.lm.pretrain import arith_model, detox_model

            pretrained = arith_model if args.task == "arith" else detox_model
            model = str(pretrained(args.model_cache, echo=console.print))
            if args.prompts:  # their length against the default model's context
                self._check_files(spec_from_flags(args, model=model, out_dir=args.out))
        with owned_dir(args.out, mode=NEW, overwrite=args.overwrite,
                       command=self.name) as out:
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
