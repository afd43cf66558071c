"""What a sweep prints while it runs: one line per trial and round.

Tune's own console output prints every trial's whole configuration when it starts (an RLlib
config is a few hundred keys) and a trial-status table every 30 s; what a person watching a
sweep wants is where each trial stands. :func:`console_output` gives a ``RunConfig`` the
Tune verbosity and callbacks for either: by default Tune is silent and :class:`TrialProgress`
prints a line per reported round, e.g.

``iif seed 0: round 3/8  train return 0.0123  dropped 0.250  1.9 s/round``

with ``verbose`` Tune's own output comes back (as ``verbose=1`` printed it before).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ray import tune
from typing_extensions import override  # torch and gymnasium depend on it

from iif_ray.experiments.results import LABEL_KEY, ROUND_ROW_KEY

TUNE_VERBOSE = 1  # what sweeps printed before: each trial's start, config and result tables


def trial_line(config: Mapping[str, Any], result: Mapping[str, Any],
               rounds: int | None) -> str:
    """One trial's progress after a round: algorithm, seed, round (of ``rounds``), the
    round's return (evaluation where the trial evaluates, else training), the fraction of
    records dropped, and the round's training seconds."""
    algo = config.get("learner_config_dict", {}).get(LABEL_KEY, "trial")
    done = int(result.get("training_iteration", 0))
    parts = [f"{algo} seed {config.get('seed')}: round {done}"
             + (f"/{rounds}" if rounds else "")]
    record = result.get(ROUND_ROW_KEY) or {}
    eval_return = _finite(record.get("eval_return"))
    train_return = _finite(record.get("train_return"))
    if eval_return is not None:
        parts.append(f"eval return {eval_return:.4g}")
    elif train_return is not None:
        parts.append(f"train return {train_return:.4g}")
    dropped = _finite(record.get("frac_dropped"))
    if dropped is not None:
        parts.append(f"dropped {dropped:.3f}")
    seconds = _finite(record.get("train_s"))
    if seconds is not None:
        parts.append(f"{seconds:.1f} s/round")
    return "  ".join(parts)


def _finite(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


class TrialProgress(tune.Callback):
    """Prints :func:`trial_line` for every reported round, and a line when a trial fails.

    Holds nothing but the round count, so Tune can store it with the experiment and a
    resumed sweep prints the same way.
    """

    def __init__(self, rounds: int | None = None) -> None:
        self.rounds = rounds

    @override
    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        print(trial_line(trial.config, result, self.rounds), flush=True)

    @override
    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        algo = trial.config.get("learner_config_dict", {}).get(LABEL_KEY, "trial")
        print(f"{algo} seed {trial.config.get('seed')}: failed (Tune retries it up to its "
              f"failure limit; the error is in {trial.path})", flush=True)


def console_output(verbose: bool, rounds: int | None = None) -> dict[str, Any]:
    """``tune.RunConfig`` keyword arguments for the console: Tune silent plus one line per
    trial round, or (``verbose``) Tune's own tables as before."""
    if verbose:
        return {"verbose": TUNE_VERBOSE}
    return {"verbose": 0, "callbacks": [TrialProgress(rounds)]}
