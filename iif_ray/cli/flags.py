"""Flags generated from settings dataclasses, and the option groups every command shares.

A settings field declared with :func:`iif_ray.options.option` becomes a flag here (its name,
type, accepted values, choices and help come from the declaration), and a value given on the
command line is checked by the same :func:`iif_ray.options.coerce` the dataclass runs, so the
command line and the Python API cannot disagree about a range. Flags default to ``None``
("not given"): a command fills only what the user gave into a preset's or a stored run's
settings (:func:`given`), which is what ``--resume`` needs to tell a changed setting from a
default.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from typing import Any

from iif_ray.options import accepted_words, coerce, field_type, options


def flag_name(cls: type, name: str) -> str:
    """The flag of field ``name`` of ``cls`` (``--drop-fraction`` for ``drop_fraction``)."""
    return options(cls)[name].flag or "--" + name.replace("_", "-")


def key_value(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE read as JSON where it parses (``action=2`` is an int)."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key, value


def comma_list(text: str) -> list[str]:
    """``a,b,,c`` as ``["a", "b", "c"]``: a list field's flag."""
    return [part for part in text.split(",") if part]


def parser_for(cls: type, name: str, flag: str | None = None) -> Any:
    """argparse's ``type=``: text -> the field's type, checked as the dataclass checks it; the
    error names the flag and the text as typed."""
    base, _ = field_type(cls, name)
    flag = flag or flag_name(cls, name)

    def parse(text: str) -> Any:
        try:
            value = base(text) if base in (int, float) else text
        except ValueError:
            value = text  # coerce says what is accepted
        try:
            return coerce(cls, name, value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{flag.lstrip('-')} must be {accepted_words(cls, name)}, got {text!r}"
            ) from None

    return parse


def add_flags(parser: argparse.ArgumentParser | Any, cls: type,
              only: Iterable[str] | None = None, exclude: Iterable[str] = ()) -> None:
    """One flag per :func:`~iif_ray.options.option` field of ``cls`` (those in ``only``, all
    by default, less ``exclude``), each defaulting to ``None``."""
    wanted = set(only) if only is not None else None
    for name, opt in options(cls).items():
        if (wanted is not None and name not in wanted) or name in exclude:
            continue
        flag = flag_name(cls, name)
        base, _ = field_type(cls, name)
        help_text = opt.help
        if opt.accepts is not None:
            help_text += f" (accepted: {accepted_words(cls, name)})"
        if base is bool:
            parser.add_argument(flag, dest=name, default=None,
                                action=argparse.BooleanOptionalAction, help=help_text)
        elif base is list:
            parser.add_argument(flag, dest=name, type=comma_list, default=None,
                                metavar=opt.metavar or "A,B", help=help_text)
        elif base is dict:
            parser.add_argument(flag, dest=name, type=key_value, action="append",
                                metavar=opt.metavar or "KEY=VALUE", help=help_text)
        elif opt.choices is not None:
            parser.add_argument(flag, dest=name, choices=opt.choice_list(), default=None,
                                metavar=opt.metavar, help=help_text)
        else:
            parser.add_argument(flag, dest=name, type=parser_for(cls, name, flag), default=None,
                                metavar=opt.metavar or {int: "N", float: "X"}.get(base, "NAME"),
                                help=help_text)


def given(args: argparse.Namespace, cls: type, only: Iterable[str] | None = None
          ) -> dict[str, Any]:
    """The fields of ``cls`` whose flags were given, as the dataclass takes them
    (repeated ``KEY=VALUE`` flags as one dict)."""
    wanted = set(only) if only is not None else None
    out: dict[str, Any] = {}
    for name in options(cls):
        if wanted is not None and name not in wanted:
            continue
        value = getattr(args, name, None)
        if value is None or value == []:
            continue
        out[name] = dict(value) if field_type(cls, name)[0] is dict else value
    return out


def add_address(parser: argparse.ArgumentParser | Any, *,
                purpose: str = "the Ray cluster to run on") -> None:
    """``--address``, declared once for every command that joins Ray."""
    parser.add_argument("--address", help=f"Ray address of {purpose}: omit for an embedded "
                                          "local Ray; 'auto', host:port or ray://host:port "
                                          "for a cluster")


def add_run_dir(parser: argparse.ArgumentParser | Any, *, what: str = "run") -> None:
    """``--out``, ``--overwrite`` and ``--resume``, declared once for the commands that
    write one run directory (``train``, ``train-lm``). ``--resume DIR`` and
    ``--out DIR --resume`` both name the run to continue."""
    parser.add_argument("--out", metavar="DIR", help=f"the {what} directory to create")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --out if it already holds files")
    parser.add_argument("--resume", nargs="?", const=True, default=None, metavar="DIR",
                        help=f"continue the interrupted {what} in DIR (or in --out) from its "
                             "last checkpoint, with the settings it was started with")


def resume_dir(args: argparse.Namespace) -> str | None:
    """The run directory ``--resume`` continues, or ``None`` for a new run.

    Raises:
        ValueError: neither or both of a new run and a resumed one are named, or
            ``--overwrite`` is given with ``--resume`` (a resumed run keeps its files).
    """
    resume = args.resume
    if resume is True:
        if args.out is None:
            raise ValueError("--resume without DIR continues the run in --out; give --out DIR")
        resume = args.out
    elif resume is not None and args.out is not None and args.out != resume:
        raise ValueError(f"--out {args.out!r} and --resume {resume!r} name different runs; "
                         "give one of them")
    if resume is None and args.out is None:
        raise ValueError("give --out DIR for a new run or --resume DIR to continue one")
    if resume is not None and args.overwrite:
        raise ValueError("--overwrite cannot be combined with --resume (a resumed run keeps "
                         "its files)")
    return resume
