"""Everything IIF keeps in ``config.learner_config_dict``: the keys, their values, validation.

``learner_config_dict`` survives checkpoints, is deep-copied into every Learner (local or
remote) and lets Tune search spaces nested in it resolve per trial, so it carries:

* ``"iif"`` (:data:`CONFIG_KEY`): the :class:`AttributionSettings` as a plain dict;
* ``"optimizer"`` (:data:`OPTIMIZER_KEY`): ``{"type": "adam"|"sgd", **kwargs}``;
* ``"advantage_normalization"`` (:data:`ADV_NORM_KEY`): ``"batch"`` or ``"minibatch"``.

This module is the only place that names these keys. Benchmark trials add two keys of their
own that training never reads (the algorithm label, where to save snapshots); those are named
in :mod:`iif_ray.experiments.results`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from iif_ray.attribution.scoring import SCORING_METHODS
from iif_ray.attribution.selection import check_drop_fraction, check_rule
from iif_ray.attribution.targets import TARGETS, make_target

MODES = ("filter", "score", "off")
FALLBACKS = ("raise", "train-unfiltered")
CONFIG_KEY = "iif"
OPTIMIZER_KEY = "optimizer"
OPTIMIZERS = ("adam", "sgd")
ADV_NORM_KEY = "advantage_normalization"
ADV_NORMS = ("batch", "minibatch")


def _check_nonneg_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return value


def _check_nonneg_float(name: str, value: Any, *, positive: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if math.isnan(v) or v < 0 or (positive and v == 0):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    return v


@dataclass
class AttributionSettings:
    """What the IIF learner does each round, before the PPO minibatch loop.

    mode: ``filter`` scores and drops records (IIF); ``score`` scores and logs but trains on
        everything; ``off`` skips scoring (plain PPO through the identical code path).
    target / target_options: a registered target name and its factory's keyword arguments.
    selection / drop_fraction: the selection rule and its ``p`` in [0, 1).
    scoring_method: ``jvp`` (default, fastest) or ``per-sample``.
    chunk_size: records per scoring chunk (bounds memory); ``None`` scores in one piece.
    num_scorers: Ray actors that score shards in parallel; 0 scores in the learner process.
    scorer_timeout_s / scorer_max_retries: a scorer silent for longer, or dead, is replaced
        and its shard re-scored, at most this many times per shard.
    scoring_fallback: ``raise`` (default) fails the round when scoring cannot complete;
        ``train-unfiltered`` trains it on every record and logs a warning each time.
    ledger_dir: where per-record Parquet ledgers go; ``None`` writes none.
    shuffle_first_epoch: shuffle kept rows before epoch 1 (RLlib shuffles only from epoch 2).
    min_keep: never drop below this many records in a round.
    """

    mode: str = "filter"
    target: str = "return"
    target_options: dict[str, Any] = field(default_factory=dict)
    selection: str = "neg-bottom"
    drop_fraction: float = 0.125
    scoring_method: str = "jvp"
    chunk_size: int | None = None
    num_scorers: int = 0
    num_cpus_per_scorer: float = 1.0
    num_gpus_per_scorer: float = 0.0
    scorer_timeout_s: float = 120.0
    scorer_max_retries: int = 2
    scoring_fallback: str = "raise"
    ledger_dir: str | None = None
    ledger_obs: bool = False
    shuffle_first_epoch: bool = True
    min_keep: int = 1
    seed: int | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> AttributionSettings:
        if self.mode not in MODES:
            raise ValueError(f"attribution mode must be one of {list(MODES)}, got {self.mode!r}")
        if self.target not in TARGETS:
            raise ValueError(f"unknown target {self.target!r}; registered: {sorted(TARGETS)}")
        if not isinstance(self.target_options, dict):
            raise ValueError(f"target_options must be a dict, got {self.target_options!r}")
        try:
            make_target(self.target, self.target_options)  # bad options fail here, not remotely
        except TypeError as e:
            raise ValueError(f"target {self.target!r}: bad target_options "
                             f"{self.target_options!r} ({e})") from None
        check_rule(self.selection)
        self.drop_fraction = check_drop_fraction(self.drop_fraction)
        if self.scoring_method not in SCORING_METHODS:
            raise ValueError(
                f"scoring_method must be one of {list(SCORING_METHODS)}, "
                f"got {self.scoring_method!r}"
            )
        if self.chunk_size is not None and (
            isinstance(self.chunk_size, bool) or not isinstance(self.chunk_size, int)
            or self.chunk_size < 1
        ):
            raise ValueError(
                f"chunk_size must be a positive integer or None, got {self.chunk_size!r}")
        _check_nonneg_int("num_scorers", self.num_scorers)
        self.num_cpus_per_scorer = _check_nonneg_float("num_cpus_per_scorer",
                                                       self.num_cpus_per_scorer)
        self.num_gpus_per_scorer = _check_nonneg_float("num_gpus_per_scorer",
                                                       self.num_gpus_per_scorer)
        self.scorer_timeout_s = _check_nonneg_float(
            "scorer_timeout_s", self.scorer_timeout_s, positive=True
        )
        _check_nonneg_int("scorer_max_retries", self.scorer_max_retries)
        if self.scoring_fallback not in FALLBACKS:
            raise ValueError(f"scoring_fallback must be one of {list(FALLBACKS)}, "
                             f"got {self.scoring_fallback!r}")
        _check_nonneg_int("min_keep", self.min_keep)
        if self.seed is not None:
            _check_nonneg_int("seed", self.seed)
        return self

    @property
    def scores(self) -> bool:
        return self.mode != "off"

    @property
    def filters(self) -> bool:
        return self.mode == "filter"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> AttributionSettings:
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown attribution settings {unknown}; known: {sorted(known)}")
        return cls(**data)


def read_settings(learner_config_dict: dict[str, Any]) -> AttributionSettings:
    """The attribution settings stored in a config's ``learner_config_dict``."""
    return AttributionSettings.from_dict(learner_config_dict.get(CONFIG_KEY))


def write_settings(learner_config_dict: dict[str, Any], **changes: Any) -> None:
    """Merge ``changes`` into the stored settings, validating the result.

    Raises:
        ValueError: an unknown setting or a value outside its accepted range.
    """
    merged = {**learner_config_dict.get(CONFIG_KEY, {}), **changes}
    learner_config_dict[CONFIG_KEY] = AttributionSettings.from_dict(merged).to_dict()


def optimizer_spec(learner_config_dict: dict[str, Any]) -> dict[str, Any] | None:
    """``{"type": "adam"|"sgd", **kwargs}``, or ``None`` for the default (Adam)."""
    spec = learner_config_dict.get(OPTIMIZER_KEY)
    return dict(spec) if spec else None


def write_optimizer(learner_config_dict: dict[str, Any], optimizer: str | dict) -> None:
    """Store ``"adam"``, ``"sgd"`` or ``{"type": ..., **kwargs}``.

    Raises:
        ValueError: an optimizer type other than those in :data:`OPTIMIZERS`.
    """
    spec = {"type": optimizer} if isinstance(optimizer, str) else dict(optimizer)
    if spec.get("type", "adam") not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {optimizer!r}")
    learner_config_dict[OPTIMIZER_KEY] = spec


def advantage_normalization(learner_config_dict: dict[str, Any]) -> str:
    """``"batch"`` (once per round, the default) or ``"minibatch"`` (SB3's choice)."""
    return learner_config_dict.get(ADV_NORM_KEY, "batch")


def write_advantage_normalization(learner_config_dict: dict[str, Any], value: str) -> None:
    """Store the advantage standardisation scope.

    Raises:
        ValueError: a value other than those in :data:`ADV_NORMS`.
    """
    if value not in ADV_NORMS:
        raise ValueError(f"advantage_normalization must be one of {list(ADV_NORMS)}, "
                         f"got {value!r}")
    learner_config_dict[ADV_NORM_KEY] = value
