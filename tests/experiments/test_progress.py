"""What a sweep prints: one line per trial round by default, Tune's own tables on request."""

from __future__ import annotations

import math
from types import SimpleNamespace

from iif_ray.experiments.progress import TUNE_VERBOSE, TrialProgress, console_output, trial_line
from iif_ray.experiments.results import LABEL_KEY, ROUND_ROW_KEY

CONFIG = {"learner_config_dict": {LABEL_KEY: "iif"}, "seed": 3}


def _result(**record: float) -> dict:
    return {"training_iteration": 4, ROUND_ROW_KEY: record}


def test_a_line_names_the_trial_its_round_return_drop_and_time():
    line = trial_line(CONFIG, _result(eval_return=math.nan, train_return=0.01234,
                                      frac_dropped=0.25, train_s=1.94), rounds=8)
    assert line == "iif seed 3: round 4/8  train return 0.01234  dropped 0.250  1.9 s/round"


def test_the_evaluation_return_is_shown_where_the_trial_evaluates():
    line = trial_line(CONFIG, _result(eval_return=-120.5, train_return=-150.0), rounds=None)
    assert line == "iif seed 3: round 4  eval return -120.5"


def test_default_output_is_a_silent_tune_plus_the_lines(capsys):
    quiet = console_output(verbose=False, rounds=8)
    assert quiet["verbose"] == 0 and isinstance(quiet["callbacks"][0], TrialProgress)
    trial = SimpleNamespace(config=CONFIG, path="trial-dir")
    quiet["callbacks"][0].on_trial_result(1, [trial], trial, _result(train_return=1.0))
    assert capsys.readouterr().out == "iif seed 3: round 4/8  train return 1\n"
    assert console_output(verbose=True) == {"verbose": TUNE_VERBOSE}
