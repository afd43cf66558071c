"""Settings declared once: the flags ``iif-ray`` generates from a settings dataclass accept and
refuse exactly what the dataclass itself accepts and refuses, in the same words."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from iif_ray.cli.common import Parser, UsageError
from iif_ray.cli.flags import add_flags, flag_name, given
from iif_ray.options import FRACTION, at_least, check_options, option, options
from iif_ray.rllib.settings import AttributionSettings


@dataclass(frozen=True)
class Toy:
    rounds: int = option(10, accepts=at_least(1), help="rounds")
    p: float = option(0.5, accepts=FRACTION, help="p")
    rule: str = option("a", choices=("a", "b"), help="rule")
    chunk: int | None = option(None, accepts=at_least(1), help="chunk")
    verbose: bool = option(False, help="say more")
    extra: dict = option(default_factory=dict, flag="--extra-option", help="k=v")
    internal: str = "not a flag"

    def __post_init__(self) -> None:
        check_options(self)


def parse(cls: type, argv: list[str]) -> argparse.Namespace:
    parser = Parser(prog="t")
    add_flags(parser, cls)
    return parser.parse_args(argv)


def test_flags_come_from_the_fields_and_only_given_ones_are_collected() -> None:
    assert list(options(Toy)) == ["rounds", "p", "rule", "chunk", "verbose", "extra"]
    args = parse(Toy, ["--rounds", "3", "--extra-option", "a=1", "--extra-option", "b=x",
                       "--verbose"])
    assert given(args, Toy) == {"rounds": 3, "verbose": True, "extra": {"a": 1, "b": "x"}}
    assert given(parse(Toy, []), Toy) == {}
    assert Toy(**given(args, Toy)).rounds == 3
    with pytest.raises(UsageError, match="unrecognized arguments: --internal"):
        parse(Toy, ["--internal", "x"])


@pytest.mark.parametrize(("name", "text", "ok"), [
    ("rounds", "1", True), ("rounds", "0", False), ("rounds", "1.5", False),
    ("rounds", "abc", False), ("p", "0", True), ("p", "0.99", True), ("p", "1", False),
    ("p", "-0.1", False), ("p", "nan", False), ("p", "inf", False), ("chunk", "0", False),
    ("chunk", "7", True),
])
def test_a_flag_refuses_exactly_what_the_dataclass_refuses(name, text, ok) -> None:
    flag = flag_name(Toy, name)
    try:
        value = given(parse(Toy, [flag, text]), Toy)[name]
        cli_ok = True
    except UsageError as e:
        cli_ok = False
        message = str(e)
        assert f"{flag.lstrip('-')} must be " in message and repr(text) in message
    assert cli_ok == ok
    converted = {"rounds": int, "chunk": int, "p": float}[name]
    try:
        direct = converted(text)
        Toy(**{name: direct})
        api_ok = True
    except ValueError as e:
        api_ok = False
        if cli_ok is False and "must be" in str(e):
            # The same words: what is accepted is said once.
            assert str(e).split(" must be ")[1].split(", got")[0] in message
    assert api_ok == ok
    if ok:
        assert value == converted(text)


def test_the_dataclass_checks_values_from_any_source() -> None:
    with pytest.raises(ValueError, match=r"rounds must be an integer >= 1, got True"):
        Toy(rounds=True)
    with pytest.raises(ValueError, match=r"rule must be one of \['a', 'b'\], got 'c'"):
        Toy(rule="c")
    assert Toy(p=0).p == 0.0 and isinstance(Toy(p=0).p, float)
    toy = Toy(verbose=True)
    assert toy.verbose and toy.extra == {} and toy.internal == "not a flag"


def test_train_flags_are_generated_from_the_attribution_settings() -> None:
    """Every user-facing attribution field is a ``train`` flag, and a bad value is refused
    by the parser with the dataclass's own range."""
    from iif_ray.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["train", "--preset", "cartpole", "--out", "x",
                              "--drop-fraction", "0.25", "--selection", "bottom",
                              "--target-option", "action=1", "--no-shuffle-first-epoch"])
    assert given(args, AttributionSettings) == {
        "drop_fraction": 0.25, "selection": "bottom", "target_options": {"action": 1},
        "shuffle_first_epoch": False}
    with pytest.raises(UsageError, match=r"min-keep must be an integer >= 0, got '-1'"):
        parser.parse_args(["train", "--out", "x", "--min-keep", "-1"])
    with pytest.raises(ValueError, match=r"min_keep must be an integer >= 0, got -1"):
        AttributionSettings(min_keep=-1)


def test_train_lm_flags_are_generated_from_the_lm_settings() -> None:
    """train-lm's flags set the spec, its update and its sampling settings; what is not
    given keeps the dataclasses' defaults (the CLI has no defaults of its own)."""
    from iif_ray.cli import build_parser
    from iif_ray.cli.train_lm import spec_from_flags
    from iif_ray.lm.spec import LMRunSpec

    args = build_parser().parse_args(
        ["train-lm", "--out", "x", "--validation-prompts", "256", "--lr", "1e-5",
         "--minibatch-size", "1", "--temperature", "0.7", "--num-gpus-per-learner", "1",
         "--selection", "negative"])
    spec = spec_from_flags(args, model="m", out_dir="x")
    default = LMRunSpec(model="m", out_dir="x")
    assert (spec.validation_prompts, spec.update.lr, spec.update.minibatch_size,
            spec.sampling.temperature, spec.learner_gpus, spec.selection) == (
        256, 1e-5, 1, 0.7, 1.0, "negative")
    assert spec.rounds == default.rounds and spec.update.epochs == default.update.epochs


def test_train_lm_resume_refuses_a_flag_that_changes_what_the_run_trains(tmp_path, capsys):
    """A resumed run continues what it started: a flag that would change it is refused
    with the stored value named, before Ray starts; placement flags may change."""
    from iif_ray.cli import main
    from iif_ray.lm.spec import LMRunSpec
    from iif_ray.run import LM, write_run_spec

    run = tmp_path / "run"
    run.mkdir()
    write_run_spec(run, LMRunSpec(model="m", out_dir=str(run), rounds=7).to_dict(), LM)
    for argv, message in [
        (["--rounds", "9"], "--rounds 9 conflicts with the run's stored rounds=7"),
        (["--lr", "0.5"], "--lr 0.5 conflicts with the run's stored lr=0.001"),
        (["--model", "other"], "--model 'other' conflicts with the run's stored model 'm'"),
        (["--num-gpus-per-learner", "64"], "ask for 64 GPU(s); this machine has"),
    ]:
        assert main(["train-lm", "--resume", str(run), *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    # The same value as stored is no change.
    from iif_ray.cli import build_parser
    from iif_ray.cli.train_lm import resume_spec

    args = build_parser().parse_args(["train-lm", "--resume", str(run), "--rounds", "7",
                                      "--scorer-timeout", "60"])
    spec = resume_spec(args)
    assert spec.rounds == 7 and spec.scorer_timeout_s == 60.0
