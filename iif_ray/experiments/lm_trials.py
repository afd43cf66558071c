"""LM runs as Tune trials: detox-mini (or any local model) x {ppo, iif, random} x seed.

A trial is one :func:`iif_ray.lm.trainer.fit` run in a run directory of its own
(``<out>/lm/<algo>-seed<k>``), reporting every round as a round row (the same schema as
the classic trials, so ``rounds.csv``, ``iif-ray report`` and its statistics work unchanged):

==================  ====================================================
round row        LM figure
==================  ====================================================
env_steps           sequences trained on so far (round x batch)
train_return        mean reward of the round's responses
eval_return         held-out reward (evaluation rounds only, else NaN)
sampling_s          generation + reward seconds
scoring_s/update_s  scoring (validation responses included) / update
==================  ====================================================

A trial restarted by Tune (a resumed sweep, or a retry after a failure) resumes its run from
the run's own checkpoint and first reports the rounds that checkpoint holds again, so Tune's
round counter and the run's rounds stay the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

# LABEL_KEY: the key trial_label reads the algorithm from, shared with the classic trials.
from iif_ray.experiments.results import LABEL_KEY, ROUND_ROW_KEY
from iif_ray.lm.spec import LMRunSpec
from iif_ray.lm.trainer import fit
from iif_ray.reporting.rounds import LM_ENV, round_row, run_name
from iif_ray.run import run_kind


def round_row_from_progress(row: dict[str, float], sequences_per_round: int) -> dict[str, float]:
    """The round row of one ``progress.csv`` row of an LM run."""
    scoring = row.get("scoring_s", 0.0)
    update = row.get("update_s", 0.0)
    return round_row(
        env_steps=row["round"] * sequences_per_round,
        eval_return=row.get("eval_reward", math.nan),
        eval_episodes=0.0,
        train_return=row["reward_mean"],
        frac_dropped=row["frac_dropped"],
        sampling_s=row.get("generate_s", 0.0) + row.get("reward_s", 0.0),
        scoring_s=scoring,
        filter_s=scoring,
        update_s=update,
        eval_s=0.0,
        train_s=row["round_s"],
    )


def lm_trainable(config: dict[str, Any]) -> None:
    """Tune function trainable: one LM run, resumed when its directory holds one."""
    from ray import tune

    algo = config["learner_config_dict"][LABEL_KEY]
    base = LMRunSpec.from_dict(config["spec"])
    out = Path(base.out_dir) / run_name(algo, int(config["seed"]))
    spec = replace(base.with_algo(algo), seed=int(config["seed"]), out_dir=str(out))
    per_round = spec.prompts_per_round * spec.group_size

    def report(row: dict[str, float]) -> None:
        tune.report({ROUND_ROW_KEY: round_row_from_progress(row, per_round),
                     "reward_mean": row["reward_mean"]})

    # run_kind: the directory holds a run (an older LM one is migrated to the run model).
    fit(spec, echo=lambda _: None, on_round=report, resume=run_kind(out) is not None)


def lm_tuner(spec: LMRunSpec, opts: Any, *, name: str = LM_ENV) -> Any:
    """Grid over ``opts.algos`` x ``opts.seed_list`` of LM runs like ``spec`` (run
    directories under ``spec.out_dir``), resumable like every sweep.

    Each trial reserves the driver's 0.5 CPU plus its rollout and learner actors' CPUs.
    """
    from ray import tune
    from ray.tune.execution.placement_groups import PlacementGroupFactory

    from iif_ray.experiments.progress import console_output
    from iif_ray.experiments.sweeps import resumable_tuner, trial_name

    space = {"spec": spec.to_dict(), "seed": tune.grid_search(opts.seed_list),
             "learner_config_dict": tune.grid_search([{LABEL_KEY: a} for a in opts.algos])}
    # One bundle for both actors: with a bundle each, Ray left them pending (fractional
    # bundles on a 2-CPU node), with no error.
    actors = {"CPU": spec.rollout_cpus + spec.learner_cpus}
    if spec.rollout_gpus + spec.learner_gpus:
        actors["GPU"] = spec.rollout_gpus + spec.learner_gpus
    bundles = [{"CPU": 0.5}, actors]
    if spec.num_scorers:  # the scorer actors' own bundle, so the trial can start them
        scorers = {"CPU": spec.num_scorers * spec.cpus_per_scorer}
        if spec.gpus_per_scorer:
            scorers["GPU"] = spec.num_scorers * spec.gpus_per_scorer
        if any(scorers.values()):  # Ray refuses an empty bundle
            bundles.append(scorers)
    resources = PlacementGroupFactory(bundles)
    run_config = tune.RunConfig(name=f"{name}-{opts.grid_tag()}",
                                storage_path=str(Path(opts.out).resolve() / "tune"),
                                failure_config=tune.FailureConfig(max_failures=3),
                                **console_output(opts.verbose, spec.rounds))
    return resumable_tuner(
        tune.with_resources(lm_trainable, resources), param_space=space,
        run_config=run_config,
        tune_config=tune.TuneConfig(max_concurrent_trials=opts.max_concurrent,
                                    trial_dirname_creator=trial_name,
                                    trial_name_creator=trial_name))
