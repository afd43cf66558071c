"""Everything IIF keeps in ``config.learner_config_dict``: the keys, their values, validation.

``learner_config_dict`` survives checkpoints, is deep-copied into every Learner (local or
remote) and lets Tune search spaces nested in it resolve per trial, so it carries:

* ``"iif"`` (:data:`CONFIG_KEY`): the :class:`AttributionSettings` as a plain dict;
* ``"optimizer"`` (:data:`OPTIMIZER_KEY`): ``{"type": "adam"|"sgd", **kwargs}``;
* ``"advantage_normalization"`` (:data:`ADV_NORM_KEY`): ``"batch"`` or ``"minibatch"``;
* ``"update"`` (:data:`UPDATE_KEY`): ``{"fast": bool, "minibatch_metrics": bool}``, how the
  learner runs its minibatch loop (see :mod:`iif_ray.rllib.ppo_learner`).

This module is the only place that names these keys. Benchmark trials add two keys of their
own that training never reads (the algorithm label, where to save snapshots); those are named
in :mod:`iif_ray.experiments.results`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from iif_ray.attribution.influence import SCORING_METHODS
from iif_ray.attribution.selection import SELECTION_RULES
from iif_ray.attribution.targets import TARGETS, make_target
from iif_ray.options import FRACTION, above, at_least, check_options, option

MODES = ("filter", "score", "off")
FALLBACKS = ("raise", "train-unfiltered")
CONFIG_KEY = "iif"
OPTIMIZER_KEY = "optimizer"
OPTIMIZERS = ("adam", "sgd")
ADV_NORM_KEY = "advantage_normalization"
ADV_NORMS = ("batch", "minibatch")
UPDATE_KEY = "update"
UPDATE_DEFAULTS = {"fast": True, "minibatch_metrics": False}


def _targets() -> list[str]:
    return sorted(TARGETS)


@dataclass
class AttributionSettings:
    """What the IIF learner does each round, before the PPO minibatch loop.

    Each user-facing field is declared with :func:`~iif_ray.options.option` (help, accepted
    values): ``iif-ray train`` generates its flags from these declarations and
    :meth:`validate` checks the same ones, so a range is written once.

    ledger_dir: where per-record Parquet ledgers go; ``None`` writes none (the run directory
        sets it, so it is no flag).
    seed: the selection rule's random stream (the run's seed sets it).
    """

    mode: str = option("filter", choices=MODES,
                       help="filter: score and drop (IIF); score: score and log, train on all; "
                            "off: plain PPO through the same code path")
    target: str = option("return", help="target function (return, action, or a registered "
                                        "name)")
    target_options: dict[str, Any] = option(
        default_factory=dict, flag="--target-option", metavar="KEY=VALUE",
        help="target option, e.g. action=2 or probe_file=p.npz (repeatable)")
    selection: str = option("neg-bottom", choices=SELECTION_RULES,
                            help="which records to drop given their scores")
    drop_fraction: float = option(0.125, accepts=FRACTION,
                                  help="p of the selection rule (neg-bottom: the share of "
                                       "negative-scored records dropped)")
    scoring_method: str = option("jvp", choices=SCORING_METHODS,
                                 help="jvp (fastest) or per-sample gradients")
    chunk_size: int | None = option(None, accepts=at_least(1),
                                    help="records per scoring chunk (bounds memory; default: "
                                         "one piece)")
    num_scorers: int = option(0, accepts=at_least(0),
                              help="scorer actors (0: score in the learner process)")
    num_cpus_per_scorer: float = option(1.0, accepts=at_least(0),
                                        help="CPUs each scorer actor reserves")
    num_gpus_per_scorer: float = option(0.0, accepts=at_least(0),
                                        help="GPUs per scorer actor (with --num-scorers > 0)")
    scorer_timeout_s: float = option(120.0, accepts=above(0), flag="--scorer-timeout",
                                     help="seconds a scorer may take on its shard before it "
                                          "is replaced and the shard re-scored")
    scorer_max_retries: int = option(2, accepts=at_least(0),
                                     help="replacements per shard before the round fails")
    scoring_fallback: str = option("raise", choices=FALLBACKS,
                                   help="raise: a round whose scoring cannot complete fails; "
                                        "train-unfiltered: it trains on every record, logged")
    ledger_dir: str | None = None
    ledger_obs: bool = option(False, help="store observations in the ledger")
    shuffle_first_epoch: bool = option(True, help="shuffle kept rows before epoch 1 (RLlib "
                                                  "shuffles only from epoch 2)")
    min_keep: int = option(1, accepts=at_least(0),
                           help="never drop below this many records in a round")
    seed: int | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> AttributionSettings:
        check_options(self)
        if self.target not in TARGETS:
            raise ValueError(f"unknown target {self.target!r}; registered: {_targets()}")
        try:
            make_target(self.target, self.target_options)  # bad options fail here, not remotely
        except TypeError as e:
            raise ValueError(f"target {self.target!r}: bad target_options "
                             f"{self.target_options!r} ({e})") from None
        if self.seed is not None and (isinstance(self.seed, bool)
                                      or not isinstance(self.seed, int) or self.seed < 0):
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
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


def update_options(learner_config_dict: dict[str, Any]) -> dict[str, bool]:
    """``{"fast": ..., "minibatch_metrics": ...}``: the lean minibatch loop (on by default) and
    whether it logs the loss terms of every minibatch instead of once per round."""
    return {**UPDATE_DEFAULTS, **learner_config_dict.get(UPDATE_KEY, {})}


def write_update_options(learner_config_dict: dict[str, Any], **options: Any) -> None:
    """Store update-loop options (keys of :data:`UPDATE_DEFAULTS`, booleans).

    Raises:
        ValueError: an unknown option or a value that is not a boolean.
    """
    for name, value in options.items():
        if name not in UPDATE_DEFAULTS:
            raise ValueError(f"unknown update option {name!r}; known: {sorted(UPDATE_DEFAULTS)}")
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be True or False, got {value!r}")
    learner_config_dict[UPDATE_KEY] = {**update_options(learner_config_dict), **options}
