"""The round record: one benchmark round's figures, and the ``rounds.csv`` file that holds them.

Every benchmark trial (ours through RLlib, SB3's through its own loop) reports one flat record
per round under the result key ``bench``; a sweep exports them as ``rounds.csv``, one row per
(env, algo, seed, round), which the report reads. This module is the only place that names
those columns.

``train_s`` is the round's wall-clock without evaluation (sampling + filtering + update), the
quantity wall-clock comparisons (RT_peak) use.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from iif_ray.atomic_files import replace_atomically
from iif_ray.rllib.results import iif_metrics
from iif_ray.rllib.settings import CONFIG_KEY, LABEL_KEY

RECORD_KEY = "bench"
RECORD_FIELDS = ("env_steps", "eval_return", "eval_episodes", "train_return", "frac_dropped",
                 "sampling_s", "scoring_s", "filter_s", "update_s", "eval_s", "train_s")
RUN_KEYS = ("env", "algo", "seed", "round")
ROUND_COLUMNS = RUN_KEYS + RECORD_FIELDS
ROUNDS_CSV = "rounds.csv"

# Evaluations made after training from policy snapshots (``iif-ray evaluate``), keyed like the
# rounds; where a run has them, they replace the in-trial ``eval_return``.
# ``snapshot``: a digest of the evaluated weights file; a snapshot rewritten since (a trial
# resumed from an earlier checkpoint retrains those rounds) is evaluated again.
EVAL_FIELDS = ("eval_return", "eval_se", "eval_episodes", "eval_method", "eval_s", "snapshot")
EVAL_COLUMNS = RUN_KEYS + EVAL_FIELDS
EVALS_CSV = "evals.csv"


def round_record(**values: float) -> dict[str, float]:
    """A complete record, every field a float.

    Raises:
        ValueError: a field is missing or unknown.
    """
    if set(values) != set(RECORD_FIELDS):
        raise ValueError(f"round record: missing {sorted(set(RECORD_FIELDS) - set(values))}, "
                         f"unknown {sorted(set(values) - set(RECORD_FIELDS))}")
    return {k: _num(values[k]) for k in RECORD_FIELDS}


def record_from_result(result: dict[str, Any], eval_s: float) -> dict[str, float]:
    """The record of one RLlib round, from ``algo.train()``'s result and its evaluation time."""
    iif = iif_metrics(result)
    ev = result.get("evaluation", {}).get("env_runners", {})
    er = result.get("env_runners", {})
    filter_s = _num(iif.get("filter_s"), 0.0)
    update_s = _num(iif.get("update_s"), 0.0)
    train_s = _num(result.get("time_this_iter_s")) - eval_s
    return round_record(
        env_steps=_num(result.get("num_env_steps_sampled_lifetime"), 0.0),
        eval_return=_num(ev.get("episode_return_mean")),
        eval_episodes=_num(ev.get("num_episodes"), 0.0),
        train_return=_num(er.get("episode_return_mean")),
        frac_dropped=_num(iif.get("frac_dropped"), 0.0),
        scoring_s=_num(iif.get("scoring_s"), 0.0),
        filter_s=filter_s,
        update_s=update_s,
        sampling_s=train_s - filter_s - update_s,
        eval_s=eval_s,
        train_s=train_s,
    )


def trial_label(config: dict[str, Any]) -> str:
    """A trial's algorithm label (``iif``, ``ppo``, ``sb3-ppo``, ``iif-p0.125``, ...)."""
    learner_dict = config.get("learner_config_dict", {})
    algo = learner_dict.get(LABEL_KEY, "unknown")
    if algo.endswith("-p-search"):  # one label per sampled drop fraction
        algo = f"iif-p{learner_dict[CONFIG_KEY]['drop_fraction']:.3f}"
    return algo


def rounds_from_results(env: str, results: Iterable) -> pd.DataFrame:
    """Tidy ``rounds.csv`` rows from a Tune ``ResultGrid``: exactly one row per trial and round.

    A trial restored from a checkpoint (a resumed sweep, or Tune's own retry after a failure)
    trains again the rounds after that checkpoint, and Tune appends them to the trial's
    results after the first attempt's: the latest report of a round wins.
    """
    frames = []
    for result in results:
        if result.metrics_dataframe is None or result.metrics_dataframe.empty:
            continue
        df = result.metrics_dataframe
        out = pd.DataFrame({
            "env": env,
            "algo": trial_label(result.config),
            "seed": int(result.config["seed"]),
            "round": df["training_iteration"].astype(int),
        })
        for col in RECORD_FIELDS:
            out[col] = df.get(f"{RECORD_KEY}/{col}", math.nan)
        frames.append(out.drop_duplicates("round", keep="last"))
    if not frames:
        return pd.DataFrame(columns=list(ROUND_COLUMNS))
    return pd.concat(frames, ignore_index=True).sort_values(["env", "algo", "seed", "round"])


def merge_rounds(path: Path, new: pd.DataFrame) -> pd.DataFrame:
    """Replace ``new``'s (env, algo, seed) runs inside an existing rounds file, keep the rest.

    The file is keyed by (env, algo, seed, round); should a key still repeat, the latest row
    wins, so the file never holds a round twice.
    """
    if path.exists() and not new.empty:
        old = pd.read_csv(path)
        key = ["env", "algo", "seed"]
        keep = ~old.set_index(key).index.isin(new.set_index(key).index.unique())
        new = pd.concat([old[keep], new], ignore_index=True)
    elif path.exists():
        new = pd.read_csv(path)
    new = new.drop_duplicates(list(RUN_KEYS), keep="last").sort_values(list(RUN_KEYS))
    _replace_file(path, new)
    return new


def _replace_file(path: Path, frame: pd.DataFrame) -> None:
    replace_atomically(path, lambda tmp: frame.to_csv(tmp, index=False, float_format="%.8g"))


def read_evals(path: str | Path) -> pd.DataFrame:
    """An ``evals.csv`` (empty frame with its columns when the file does not exist).

    Raises:
        ValueError: a file that lacks evaluation columns.
    """
    path = Path(path)
    if not path.exists():
        return pd.DataFrame(columns=list(EVAL_COLUMNS))
    frame = pd.read_csv(path)
    missing = [c for c in EVAL_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{str(path)!r} lacks columns {missing}; accepted: CSV with columns "
                         f"{', '.join(EVAL_COLUMNS)}")
    return frame


def merge_evals(path: str | Path, new: pd.DataFrame) -> pd.DataFrame:
    """Add evaluation rows to ``evals.csv``; a repeated (env, algo, seed, round) keeps the new."""
    path = Path(path)
    parts = [f for f in (read_evals(path), new[list(EVAL_COLUMNS)]) if not f.empty]
    frame = pd.concat(parts, ignore_index=True) if parts else new[list(EVAL_COLUMNS)]
    frame = frame.drop_duplicates(list(RUN_KEYS), keep="last").sort_values(list(RUN_KEYS))
    _replace_file(path, frame)
    return frame


def load_rounds(directory: str | Path) -> pd.DataFrame:
    """All ``*rounds*.csv`` files of a results directory, concatenated.

    Raises:
        FileNotFoundError: the directory holds none.
        ValueError: a file that is empty, not CSV, lacks round-record columns or holds no row.
    """
    if not Path(directory).is_dir():
        raise FileNotFoundError(f"{str(directory)!r} is not a directory; accepted: a sweep's "
                                "--out directory holding rounds.csv")
    files = sorted(Path(directory).glob("*rounds*.csv"))
    if not files:
        raise FileNotFoundError(f"no *rounds*.csv in {str(directory)!r}; run a sweep first")
    frames = []
    for f in files:
        try:
            frame = pd.read_csv(f)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise ValueError(f"{str(f)!r} is not a rounds file ({type(e).__name__}); "
                             f"accepted: CSV with columns {', '.join(ROUND_COLUMNS)}") from None
        missing = [c for c in ROUND_COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(f"{str(f)!r} lacks columns {missing}; accepted: CSV with columns "
                             f"{', '.join(ROUND_COLUMNS)}")
        if frame.empty:
            raise ValueError(f"{str(f)!r} holds no rounds; accepted: a sweep's rounds.csv "
                             "with at least one finished round")
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _num(x: Any, default: float = math.nan) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return default
