"""``iif-ray evaluate``: evaluate a sweep's policy snapshots, exactly or paired, into ``evals.csv``.

Per environment the protocol is chosen for precision at an affordable cost:

* **exact** (FrozenLake, MiniGrid-Empty): the expected return by dynamic programming
  (:mod:`iif_ray.evaluation.exact`), every round, standard error 0.
* **paired-mc** (everything else): complete episodes on the shared seed list
  (:mod:`iif_ray.evaluation.montecarlo`), in blocks of ``block`` episodes from ``min_episodes``
  until the standard error is at most ``target_se_frac`` of the preset's return range (or
  ``max_episodes``), every ``every`` rounds plus the run's planned last one. Every run is
  evaluated on the same prefix of the same seed list, so comparisons between runs are paired.

Runs are evaluated as Ray tasks (one CPU each), so a cluster evaluates in parallel; each
finished run's rows are merged into ``evals.csv`` at once, and rows already there are not
computed again: an interrupted evaluation resumes where it stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from iif_ray.envs import make_env
from iif_ray.evaluation import (
    PolicySampler,
    episode_seeds,
    expected_return,
    finite_mdp,
    rollout_returns,
    standard_error,
    supports_exact,
)
from iif_ray.experiments.snapshots import (
    SNAPSHOT_ROOT,
    SnapshotRun,
    find_runs,
    load_snapshot,
    read_spec,
    round_file,
    snapshot_digest,
)
from iif_ray.presets import get_preset
from iif_ray.reporting.rounds import EVAL_COLUMNS, EVALS_CSV, merge_evals, read_evals
from iif_ray.rllib.module_bridge import policy_from_spec

TARGET_SE_FRAC = 0.02  # standard error <= 2% of the environment's return range


@dataclass(frozen=True)
class EvalProtocol:
    """How one environment's snapshots are evaluated (see the module docstring)."""

    method: str  # "exact" or "paired-mc"
    every: int = 1
    min_episodes: int = 100
    block: int = 100
    max_episodes: int = 1000
    target_se: float = 0.0  # absolute; 0: stop at min_episodes

    def rounds(self, available: Iterable[int], final: int | None = None) -> list[int]:
        """Round 0, every ``every``-th round and the run's ``final`` one, among those saved.

        Only the planned final round joins off the cadence: the newest round of a run still
        training is a point no other run has, and is evaluated only if it is on the grid.
        """
        return [r for r in sorted(available) if r % self.every == 0 or r == final]


# Measured costs on one core (trained policies; see results/evidence/README.md): Acrobot
# about 1-3 s and LunarLander about 3-8 s per 100 episodes.
_MC_EVERY = {"acrobot": 1, "lunarlander": 5}


def protocol_for(env: str, *, every: int | None = None,
                 min_episodes: int | None = None) -> EvalProtocol:
    """The default protocol of a preset, with optional overrides."""
    preset = get_preset(env)
    if supports_exact(preset.env_id):
        proto = EvalProtocol("exact", every=1)
    else:
        lo, hi = preset.return_range or (0.0, 0.0)
        proto = EvalProtocol("paired-mc", every=_MC_EVERY.get(env, 1),
                             target_se=TARGET_SE_FRAC * (hi - lo))
    if every is not None:
        proto = replace(proto, every=every)
    if min_episodes is not None:
        proto = replace(proto, min_episodes=min_episodes,
                        max_episodes=max(min_episodes, proto.max_episodes))
    return proto


def evaluate_run(run: SnapshotRun, rounds: list[int], proto: EvalProtocol) -> pd.DataFrame:
    """Evaluate the given rounds of one run; one ``evals.csv`` row per round."""
    preset = get_preset(run.env)
    policy = policy_from_spec(read_spec(run.path))
    policy.net.eval()
    sampler = PolicySampler(policy)
    mdp = finite_mdp(preset.env_id, preset.env_kwargs) if proto.method == "exact" else None

    def new_env():
        return make_env(preset.env_id, {"kwargs": dict(preset.env_kwargs)})

    rows = []
    for r in rounds:
        weights, digest = load_snapshot(round_file(run.path, r))  # one read: digest = weights
        policy.net.load_state_dict(weights)
        t0 = time.perf_counter()
        if mdp is not None:
            value, se, episodes = expected_return(mdp, sampler.probabilities), 0.0, 0
        else:
            value, se, episodes = _adaptive_mc(new_env, sampler, proto)
        rows.append({"env": run.env, "algo": run.algo, "seed": run.seed, "round": r,
                     "eval_return": value, "eval_se": se, "eval_episodes": episodes,
                     "eval_method": proto.method, "eval_s": time.perf_counter() - t0,
                     "snapshot": digest})
    return pd.DataFrame(rows, columns=list(EVAL_COLUMNS))


def _adaptive_mc(new_env: Callable, sampler: PolicySampler,
                 proto: EvalProtocol) -> tuple[float, float, int]:
    """Blocks of the shared seed list until the standard error meets the target.

    The list is the same for every run, so any two runs share at least their first
    ``min_episodes`` episodes.
    """
    n = proto.min_episodes
    returns = rollout_returns(new_env, sampler, episode_seeds(n)).returns
    while n < proto.max_episodes and standard_error(returns) > proto.target_se:
        more = min(proto.block, proto.max_episodes - n)
        seeds = episode_seeds(n + more)[n:]
        returns = np.concatenate([returns, rollout_returns(new_env, sampler, seeds).returns])
        n += more
    return float(returns.mean()), standard_error(returns), len(returns)


@dataclass(frozen=True)
class EvaluateOptions:
    """What ``iif-ray evaluate`` was asked for."""

    out: str
    envs: tuple[str, ...] = ()
    every: int | None = None
    min_episodes: int | None = None


def pending_work(opts: EvaluateOptions) -> list[tuple[SnapshotRun, list[int], EvalProtocol]]:
    """(run, rounds still to evaluate, protocol) for every snapshot run under ``opts.out``.

    A point counts as evaluated when ``evals.csv`` holds a finite return for that snapshot
    (the same weights digest); a NaN return is evaluated again.

    Raises:
        FileNotFoundError: no snapshots there.
        ValueError: an ``evals.csv`` that is not one (cut short, other columns).
    """
    root = Path(opts.out) / SNAPSHOT_ROOT
    runs = [r for r in find_runs(root) if not opts.envs or r.env in opts.envs]
    if not runs:
        raise FileNotFoundError(f"no policy snapshots under {str(root)!r}; accepted: the --out "
                                "directory of a sweep that saves them (iif-ray sweep evidence)")
    done = read_evals(Path(opts.out) / EVALS_CSV)
    # A NaN return is an evaluation that did not produce one: that point is evaluated again.
    done = done[done["eval_return"].notna()]
    have = set(zip(done["env"], done["algo"], done["seed"].astype(int), done["round"].astype(int),
                   done["snapshot"].astype(str), strict=True))
    work = []
    for run in runs:
        proto = protocol_for(run.env, every=opts.every, min_episodes=opts.min_episodes)
        todo = [r for r in proto.rounds(run.rounds(), run.final_round())
                if (run.env, run.algo, run.seed, r,
                    snapshot_digest(round_file(run.path, r))) not in have]
        if todo:
            work.append((run, todo, proto))
    return work


def evaluate_sweep(opts: EvaluateOptions, echo: Callable[[str], None] = print,
                   work: list | None = None) -> Path:
    """Evaluate every pending snapshot as Ray tasks, merging each run's rows as it finishes.

    Args:
        work: :func:`pending_work`'s answer when the caller already has it.

    Returns:
        The path of ``evals.csv``.
    """
    import ray

    path = Path(opts.out) / EVALS_CSV
    work = pending_work(opts) if work is None else work
    points = sum(len(rounds) for _, rounds, _ in work)
    echo(f"evaluating {points} snapshot(s) of {len(work)} run(s) into {path}")
    task = ray.remote(num_cpus=1)(evaluate_run)
    pending = {task.remote(run, rounds, proto): run for run, rounds, proto in work}
    finished = 0
    t0 = time.perf_counter()
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        run = pending.pop(ready[0])
        rows = ray.get(ready[0])
        merge_evals(path, rows)
        finished += len(rows)
        se = rows["eval_se"]
        echo(f"{run.env}/{run.algo}/seed{run.seed}: {len(rows)} point(s), "
             f"SE mean {se.mean():.3g} max {se.max():.3g}, {rows['eval_s'].sum():.0f} s "
             f"[{finished}/{points}, {time.perf_counter() - t0:.0f} s]")
    return path
