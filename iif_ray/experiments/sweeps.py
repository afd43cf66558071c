"""Tune sweeps: build, run (or resume) and export benchmark grids.

A sweep file (``tune_experiments/*.py``) defines ``tuners(opts: SweepOptions)`` yielding
``(name, tune.Tuner)`` pairs, usually one per environment because budgets and networks differ
per environment. :func:`run_sweep` fits each, resuming an experiment directory that already
exists, and writes every trial's per-round ``bench`` record to one tidy ``rounds.csv``.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import pickle
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from iif_ray.atomic_files import write_json_atomically
from iif_ray.experiments.options import SweepOptions
from iif_ray.experiments.results import LABEL_KEY, rounds_from_results
from iif_ray.experiments.snapshots import snapshot_root
from iif_ray.experiments.trials import EVAL_EPISODES, TrialSpec, trial_config
from iif_ray.presets import algo_settings, get_preset
from iif_ray.reporting.rounds import ROUNDS_CSV, merge_rounds
from iif_ray.rllib.settings import CONFIG_KEY
from iif_ray.run.layout import SWEEP_SPEC

logger = logging.getLogger(__name__)


def installed_sweeps() -> Path | None:
    """The ``tune_experiments`` package shipped with iif-ray (a checkout's, when editable)."""
    spec = importlib.util.find_spec("tune_experiments")
    return Path(spec.origin).parent if spec is not None and spec.origin else None


def sweep_candidates(path_or_name: str) -> list[Path]:
    """Where a sweep is looked for: a file path as given; a name as
    ``./tune_experiments/<name>.py`` (your own edits first), then among the shipped ones."""
    if Path(path_or_name).suffix:
        return [Path(path_or_name)]
    file = f"{path_or_name}.py"
    shipped = installed_sweeps()
    local = Path("tune_experiments") / file
    return list(dict.fromkeys([local, *([shipped / file] if shipped else [])]))


def load_sweep(path_or_name: str) -> Any:
    """Import a sweep file by path, or ``tune_experiments/<name>.py`` by name.

    Raises:
        FileNotFoundError: no such sweep file.
        ValueError: not a Python file, one that fails to import, or one that defines no
            ``tuners(opts)``.
    """
    candidates = sweep_candidates(path_or_name)
    path = next((p for p in candidates if p.exists()), None)
    if path is None:
        looked = ", ".join(repr(str(p)) for p in candidates)
        raise FileNotFoundError(f"sweep {path_or_name!r} not found (looked for {looked})")
    accepted = "accepted: a Python file defining tuners(opts), like tune_experiments/*.py"
    if path.is_dir() or path.suffix != ".py":
        raise ValueError(f"sweep {path_or_name!r} ({str(path)!r}) is not a Python file; "
                         f"{accepted}")
    spec = importlib.util.spec_from_file_location(f"iif_sweep_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    # No __pycache__ beside a user's sweep file: reading a sweep writes nothing.
    dont_write, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise ValueError(f"sweep file {str(path)!r} does not import ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:120] if str(e) else ''}); "
                         f"{accepted}") from None
    finally:
        sys.dont_write_bytecode = dont_write
    if not callable(getattr(module, "tuners", None)):
        raise ValueError(f"sweep file {str(path)!r} defines no tuners(opts) function; "
                         f"{accepted}")
    return module


def trial_name(trial) -> str:
    """``<algo>-seed<k>-<id>``: readable trial names and directories for any grid whose
    configs carry the algorithm label and the seed (classic and LM trials do)."""
    cfg = trial.config
    algo = cfg.get("learner_config_dict", {}).get(LABEL_KEY, "trial")
    return f"{algo}-seed{cfg.get('seed')}-{trial.trial_id}"


def grid_space(env: str, opts: SweepOptions) -> tuple[dict[str, Any], int]:
    """Tune param space (algorithm x seed grid on the env's preset) and the env-step budget."""
    from ray import tune

    preset = get_preset(env)
    if opts.model_overrides:
        preset = replace(preset, model={**preset.model, **opts.model_overrides})
    budget = int(math.ceil(preset.timesteps * opts.budget_scale / preset.steps_per_round)
                 * preset.steps_per_round)
    eval_episodes = (EVAL_EPISODES.get(env, 10) if opts.eval_episodes is None
                     else opts.eval_episodes)
    root = str(snapshot_root(opts.out)) if opts.snapshots else None
    base = trial_config(TrialSpec(preset, "iif", opts.first_seed, eval_episodes, opts.num_envs,
                                  snapshot_root=root, restart_per_round=opts.restart_per_round,
                                  final_round=budget // preset.steps_per_round))
    params = base.to_dict()
    learner_dict = dict(params["learner_config_dict"])
    variants = []
    for algo in opts.algos:
        d = dict(learner_dict)
        d[CONFIG_KEY] = {**learner_dict[CONFIG_KEY], **algo_settings(algo)}
        d[LABEL_KEY] = algo + opts.label_suffix
        variants.append(d)
    params["learner_config_dict"] = tune.grid_search(variants)
    params["seed"] = tune.grid_search(opts.seed_list)
    return params, budget


def resumable_tuner(trainable: Any, *, param_space: dict[str, Any], run_config: Any,
                    tune_config: Any = None, echo: Callable[[str], None] = print) -> Any:
    """A ``tune.Tuner`` that continues its experiment when one exists under the same name.

    Every sweep builds its tuners through here, so rerunning the same command after an
    interruption resumes: finished trials stay finished, the others restart from their last
    checkpoint (or from the start when they had none). ``echo`` says which, per experiment.
    """
    from ray import tune

    path = Path(run_config.storage_path) / run_config.name
    if not tune.Tuner.can_restore(str(path)):
        echo(f"{run_config.name}: starting fresh in {path}")
        return tune.Tuner(trainable, param_space=param_space, tune_config=tune_config,
                          run_config=run_config)
    # Tune keeps the grid's primitive values in the experiment, but every object in it (an
    # RLlib config holds classes) only as a placeholder that the ``param_space`` handed to
    # ``restore`` resolves: without it, resumed and not-yet-started trials receive the
    # placeholder tuples instead of the classes. Tune also refuses a ``param_space`` whose keys
    # differ from the stored ones, which a newer iif-ray's config (one more attribute) would,
    # so the current space goes in cut down to the stored keys: the objects come from the
    # current code, the values, which decide the trials, still from the stored grid.
    space, why_not = space_for_restore(param_space, path)
    if why_not:
        echo(f"{run_config.name}: {why_not}; resuming without refreshing the grid's objects "
             "(trials that need one will fail on Tune's placeholder)")
    tuner = tune.Tuner.restore(str(path), trainable=trainable, param_space=space,
                               resume_errored=True, restart_errored=False)
    results = tuner.get_results()
    rounds = restore_rotated_checkpoints(results, echo=echo)
    echo(f"{run_config.name}: {describe_resume(results, rounds)}")
    return tuner


CHECKPOINT_PREFIX = "checkpoint_"  # Tune's checkpoint folders: checkpoint_000003


def _checkpoint_index(path: Path) -> int:
    """The number of a Tune checkpoint folder, -1 for anything else."""
    digits = path.name[len(CHECKPOINT_PREFIX):]
    return int(digits) if path.name.startswith(CHECKPOINT_PREFIX) and digits.isdigit() else -1


def restore_rotated_checkpoints(results: Iterable[Any], *,
                                echo: Callable[[str], None] = print) -> dict[str, int]:
    """Give back the checkpoint Tune will restore where Tune itself rotated it away.

    Tune registers a trial's new checkpoint and at once deletes the one before
    (``num_to_keep=1``), but writes its experiment state only every ten seconds or more.
    A sweep stopped in between leaves a state that names a deleted checkpoint, and every
    restore of that trial fails ("does not exist on storage anymore"). The checkpoint that
    replaced it is complete (Tune deletes the old one only after registering the new), so
    it is copied, whole and then renamed, under the name the state expects; Tune restores
    it and continues its numbering from there, overwriting the original on its next save.

    Returns ``{trial path: round}`` for the trials so mended (the round their restored
    checkpoint holds, where it can be read).
    """
    mended: dict[str, int] = {}
    for result in results:
        if result.checkpoint is None or (result.metrics or {}).get("done"):
            continue
        expected = Path(result.checkpoint.path)
        index = _checkpoint_index(expected)
        # Not a Tune checkpoint folder, intact, or not on a local file system: nothing to do.
        if index < 0 or expected.exists() or not expected.parent.is_dir():
            continue
        later = sorted((p for p in expected.parent.iterdir()
                        if p.is_dir() and _checkpoint_index(p) > index), key=_checkpoint_index)
        if not later:
            continue
        source = later[0]
        partial = expected.with_name(f".{expected.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(source, partial)
        partial.rename(expected)
        round_ = _checkpoint_round(source)
        if round_ >= 0:
            mended[str(result.path)] = round_
        echo(f"{expected.parent.name}: Tune's state names {expected.name}, which it had "
             f"replaced by {source.name} ({f'round {round_}' if round_ >= 0 else 'round unknown'}"
             ") when the sweep stopped; resuming from that one")
    return mended


def _checkpoint_round(checkpoint: Path) -> int:
    """The training iteration an RLlib algorithm checkpoint holds (-1 if unreadable)."""
    try:
        with open(checkpoint / "algorithm_state.pkl", "rb") as f:
            return int(pickle.load(f)["training_iteration"])
    except (OSError, KeyError, TypeError, ValueError, pickle.UnpicklingError):
        return -1


def space_for_restore(param_space: dict[str, Any],
                      path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """``param_space`` restricted to the flat keys the experiment at ``path`` was started with
    (what Tune's restore accepts), or None and the reason when that cannot be had: the state
    is unreadable, Tune stored no keys, or this version's grid lacks some stored key."""
    from ray.tune.impl.tuner_internal import _TUNER_PKL
    from ray.tune.utils import flatten_dict

    try:
        with open(path / _TUNER_PKL, "rb") as f:
            stored = pickle.load(f).get("__flattened_param_space_keys")
    except OSError as err:
        return None, f"its {_TUNER_PKL} is unreadable here ({err})"
    if stored is None:
        return None, f"its {_TUNER_PKL} records no grid keys"
    missing = sorted(set(stored) - set(flatten_dict(param_space)))
    if missing:
        return None, (f"this version's grid lacks {len(missing)} of its keys "
                      f"(first: {missing[0]!r})")
    # Every stored key is a leaf path of the current space, so the cut keeps exactly them.
    return _restrict(param_space, set(stored), ""), None


def _restrict(space: dict[str, Any], keys: set[str], prefix: str) -> dict[str, Any]:
    """The part of ``space`` whose '/'-joined paths (Tune's flat keys) are in ``keys``."""
    kept: dict[str, Any] = {}
    for key, value in space.items():
        flat = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            inner = _restrict(value, keys, flat + "/")
            if inner:
                kept[key] = inner
        elif flat in keys or isinstance(value, dict):
            kept[key] = value
    return kept


def describe_resume(results: Any, mended: dict[str, int] | None = None) -> str:
    """"resuming N trials: F finished, C from checkpoints at rounds {...}, S from the start";
    ``mended``: trials whose checkpoint :func:`restore_rotated_checkpoints` gave back, with
    the round it holds."""
    finished, from_round, fresh = 0, [], 0
    mended = mended or {}
    for result in results:
        if result.metrics and result.metrics.get("done"):
            finished += 1
            continue
        rounds = [m.get("training_iteration", 0) for _, m in (result.best_checkpoints or [])]
        if str(result.path) in mended:
            rounds = [mended[str(result.path)]]
        if rounds:
            from_round.append(int(max(rounds)))
        else:
            fresh += 1
    total = finished + len(from_round) + fresh
    parts = [f"{finished} finished"]
    if from_round:
        parts.append(f"{len(from_round)} from their round-"
                     f"{'/'.join(str(r) for r in sorted(set(from_round)))} checkpoints")
    if fresh:
        parts.append(f"{fresh} from round 0")
    return f"resuming {total} trial(s): " + ", ".join(parts)


def benchmark_tuner(env: str, opts: SweepOptions, *, name: str):
    """Grid over algorithm x seed for one environment (paper preset), stopped at its budget."""
    from ray import tune

    from iif_ray.experiments.progress import console_output
    from iif_ray.rllib import IIFPPO

    params, budget = grid_space(env, opts)
    name = f"{name}-{opts.grid_tag()}"
    storage = str(Path(opts.out).resolve() / "tune")
    run_config = tune.RunConfig(
        name=name,
        storage_path=storage,
        stop={"num_env_steps_sampled_lifetime": budget},
        checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=opts.checkpoint_every,
                                                checkpoint_at_end=True, num_to_keep=1),
        failure_config=tune.FailureConfig(max_failures=3),
        **console_output(opts.verbose, budget // get_preset(env).steps_per_round),
    )
    return resumable_tuner(
        IIFPPO, param_space=params, run_config=run_config,
        tune_config=tune.TuneConfig(max_concurrent_trials=opts.max_concurrent,
                                    trial_dirname_creator=trial_name,
                                    trial_name_creator=trial_name))


def record_sweep(out: str | Path, sweep: str, opts: Any) -> Path:
    """Write ``<out>/sweep.json`` (which sweep, with which options) when a sweep or demo
    starts a directory: it makes the directory recognisably ours (``--overwrite``, ``demo``
    and ``evaluate`` check for it) and tells a reader what ran. A resumed sweep keeps the
    first record. The directory itself is not stored: it is wherever the file lies."""
    path = Path(out) / SWEEP_SPEC
    if not path.exists():
        options = {k: v for k, v in asdict(opts).items() if k != "out"}
        write_json_atomically(path, {"sweep": sweep, "options": options,
                                     "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return path


def run_sweep(module: Any, opts: SweepOptions) -> Path:
    """Fit every tuner of a sweep module and export ``<out>/rounds.csv``.

    Returns:
        The path of ``rounds.csv``.

    Raises:
        SweepError: some trials failed or reported nothing (finished rows are kept).
    """
    return fit_and_export(_as_pairs(module.tuners(opts)), opts.out)


def fit_and_export(pairs: Iterable[tuple[str, Any]], out: str | Path) -> Path:
    """Fit ``(env, tuner)`` pairs one after another, merging each one's rows into
    ``<out>/rounds.csv`` as it finishes.

    Raises:
        SweepError: some trials failed or reported nothing (finished rows are kept).
    """
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rounds_path = out / ROUNDS_CSV
    problems: list[str] = []
    for env, tuner in pairs:
        results = tuner.fit()
        rows = rounds_from_results(env, results)
        merge_rounds(rounds_path, rows)
        errors = list(results.errors)
        if errors:
            logger.error("%d trial(s) of %s failed: %s", len(errors), env, errors[:2])
            problems.append(f"{len(errors)} trial(s) of {env} failed (first: {errors[0]})")
        elif rows.empty:
            problems.append(
                f"the trials of {env} reported no per-round results (Tune's result files "
                "are missing: is TUNE_DISABLE_AUTO_CALLBACK_LOGGERS set?)")
    if problems:
        raise SweepError("; ".join(problems) + f"; rows that did finish are in {rounds_path}")
    return rounds_path


class SweepError(RuntimeError):
    """Some trials of a sweep failed or produced nothing; finished rows are kept."""


def _as_pairs(items) -> Iterator[tuple[str, Any]]:
    for item in items:
        if isinstance(item, tuple):
            yield item
        else:
            raise TypeError("tuners(opts) must yield (env_name, tune.Tuner) pairs")
