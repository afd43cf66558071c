"""Settings fields that describe themselves, so each setting has one source.

A settings dataclass declares every user-facing field with :func:`option`: its help text, the
values it accepts (one predicate and the words for it) or its choices, and the flag name where
that differs from the field's. Two readers use the same declaration:

* the dataclass's own validation (:func:`check_options`), whatever the value came from: a
  Python call, ``run.json``, a Tune search space, a checkpoint's config;
* the command line (``iif_ray.cli.flags``), which generates the flags from it and refuses a
  bad value before Ray starts, with the same words.

So a range is written once and a flag cannot drift from the field it sets (a flag that once
said ``p in [0, 1)`` while the spec accepted 1.0 is the failure this prevents). The module is
argparse-free and Ray-free: settings at any layer can use it.
"""

from __future__ import annotations

import functools
import math
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

OPTION = "iif_ray.option"


@dataclass(frozen=True)
class Accepts:
    """The values a numeric field accepts: a predicate and how to say it."""

    ok: Callable[[float], bool]
    words: str  # completes "<name> must be ...", e.g. ">= 1" or "in [0, 1)"


def at_least(minimum: float) -> Accepts:
    return Accepts(lambda v: v >= minimum, f">= {minimum:g}")


def above(minimum: float) -> Accepts:
    return Accepts(lambda v: v > minimum, f"> {minimum:g}")


FRACTION = Accepts(lambda v: 0 <= v < 1, "in [0, 1)")


@dataclass(frozen=True)
class Option:
    """How a field shows itself to users (see the module docstring)."""

    help: str
    accepts: Accepts | None = None
    # The accepted strings, or a callable giving them (registries that grow at run time).
    choices: Sequence[str] | Callable[[], Sequence[str]] | None = None
    flag: str | None = None  # default: the field name with dashes
    metavar: str | None = None

    def choice_list(self) -> list[str] | None:
        if self.choices is None:
            return None
        return list(self.choices() if callable(self.choices) else self.choices)


def option(default: Any = MISSING, *, help: str, accepts: Accepts | None = None,
           choices: Sequence[str] | Callable[[], Sequence[str]] | None = None,
           flag: str | None = None, metavar: str | None = None,
           default_factory: Any = MISSING) -> Any:
    """A dataclass field with its :class:`Option` in the field's metadata."""
    meta = {OPTION: Option(help, accepts, choices, flag, metavar)}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


# Both are read for every field of every settings object constructed (check_options), and a
# class's fields never change: resolving its string annotations once per class, not once per
# field per object, is what keeps constructing a spec cheap.
@functools.cache
def options(cls: type) -> dict[str, Option]:
    """The fields of ``cls`` declared with :func:`option`, in declaration order (read-only)."""
    return {f.name: f.metadata[OPTION] for f in fields(cls) if OPTION in f.metadata}


@functools.cache
def field_type(cls: type, name: str) -> tuple[type, bool]:
    """The base type of field ``name`` (``int``, ``float``, ``str``, ``bool``, ``dict``,
    ``tuple``...) and whether ``None`` is allowed (``int | None``)."""
    hint = typing.get_type_hints(cls)[name]
    args = typing.get_args(hint)
    optional = type(None) in args
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in args if a is not type(None))
    return (typing.get_origin(hint) or hint), optional


def coerce(cls: type, name: str, value: Any) -> Any:
    """``value`` as field ``name`` of ``cls`` holds it, or ``ValueError`` naming the field
    and what it accepts. Integers must be integers (``True`` is not 1); floats must be finite
    numbers; choices must be among the choices."""
    opt = options(cls)[name]
    base, optional = field_type(cls, name)
    if value is None and optional:
        return None
    raw = value
    if base is int:
        good = isinstance(value, int) and not isinstance(value, bool)
    elif base is float:
        try:
            value = float(value)
        except (TypeError, ValueError):
            value = math.nan
        good = math.isfinite(value)
    elif base is bool:
        good = isinstance(value, bool)
    else:
        good = isinstance(value, base)
    if good and opt.accepts is not None:
        good = opt.accepts.ok(value)
    choices = opt.choice_list()
    if good and choices is not None:
        good = value in choices
    if not good:
        raise ValueError(f"{name} must be {_accepted(base, opt)}, got {raw!r}")
    return value


def _accepted(base: type, opt: Option) -> str:
    """What a field accepts, in words: "an integer >= 1", "a number in [0, 1)", "one of [...]"."""
    choices = opt.choice_list()
    if choices is not None:
        return f"one of {choices}"
    noun = {int: "an integer", float: "a number", bool: "true or false",
            str: "a string"}.get(base, f"a {base.__name__}")
    return f"{noun} {opt.accepts.words}" if opt.accepts else noun


def accepted_words(cls: type, name: str) -> str:
    """What field ``name`` of ``cls`` accepts, in words (for messages)."""
    return _accepted(field_type(cls, name)[0], options(cls)[name])


def check_options(obj: Any) -> None:
    """Check (and normalise, e.g. ``1`` to ``1.0`` for a float) every :func:`option` field of
    the dataclass instance ``obj`` in place; frozen dataclasses too.

    Raises:
        ValueError: the first field outside what it accepts, named with the accepted values.
    """
    cls = type(obj)
    for name in options(cls):
        object.__setattr__(obj, name, coerce(cls, name, getattr(obj, name)))
