"""Speed benchmarks that print figures, measured side by side in one run (never timed tests).

``scoring``: per preset, run PPO rounds in ``mode="score"`` (every record is scored, none is
dropped), so the scoring time and the full PPO update time of the *same* rounds sit side by
side. The first round carries one-off warm-up costs (lazy imports inside ``torch.func``) and
is reported apart from the steady-state mean the ratio uses.

``pool``: records per second of in-process scoring against pools of 1, 2, ... scorer actors
on a small workload (the LunarLander network, one 2,048-record round) and heavy ones.

``sb3``: seconds per PPO round, ours against Stable-Baselines3 and a bare torch loop
(:mod:`iif_ray.experiments.bare_ppo`), alternating round by round.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch

from iif_ray.experiments.sb3 import make_sb3, require_sb3, sb3_round
from iif_ray.experiments.threads import torch_threads
from iif_ray.presets import PRESETS, get_preset
from iif_ray.rllib import build_config
from iif_ray.rllib.module_bridge import functional_policy, policy_from_spec
from iif_ray.rllib.results import DEFAULT_MODULE
from iif_ray.rllib.run_files import progress_row


def bench_scoring(presets: list[str], rounds: int = 4, seed: int = 0,
                  echo: Callable[[str], None] = print,
                  devices: tuple[float, ...] = (0.0,)) -> dict[str, float]:
    """Return ``{preset: steady-state scoring/update ratio}`` and print a table per preset.

    ``devices`` lists ``num_gpus_per_learner`` values to run side by side (``(0.0, 1.0)``:
    CPU then GPU, same seed); ratios are keyed ``preset`` for CPU, ``preset@gpu`` for GPU.
    """
    if rounds < 2:
        raise ValueError(f"rounds must be >= 2 (one warm-up plus measured rounds), got {rounds}")
    ratios: dict[str, float] = {}
    for name, gpus in ((n, g) for n in presets for g in devices):
        preset = get_preset(name)
        config = build_config(preset, algo="iif", seed=seed, attribution={"mode": "score"},
                              num_gpus_per_learner=gpus)
        algo = config.build_algo()
        label = f"{name}@gpu" if gpus else name
        try:
            echo(f"== {label}: {preset.env_id}, {preset.steps_per_round} records/round, "
                 f"{preset.num_epochs} epochs x minibatch {preset.minibatch_size}, "
                 f"learner on {'GPU' if gpus else 'CPU'}")
            echo(f"{'round':>5} {'records':>8} {'scoring_s':>10} {'update_s':>9} {'ratio':>7}")
            rows = []
            for _ in range(rounds):
                row = progress_row(algo.train(), 0.0)
                rows.append(row)
                echo(f"{row['round']:>5} {int(row['num_records']):>8} "
                     f"{row['scoring_s']:>10.4f} {row['update_s']:>9.3f} "
                     f"{row['scoring_s'] / row['update_s']:>7.4f}")
        finally:
            algo.stop()
        steady = rows[1:]
        scoring = statistics.mean(r["scoring_s"] for r in steady)
        update = statistics.mean(r["update_s"] for r in steady)
        ratio = scoring / update
        ratios[label] = ratio
        echo(f"warm-up round scoring_s: {rows[0]['scoring_s']:.4f} (excluded from the ratio)")
        echo(f"mean over rounds 2..{rounds}: scoring {scoring:.4f} s, update {update:.3f} s")
        echo(f"scoring/update {label}: {ratio:.4f}")
    return ratios


@dataclass(frozen=True)
class PoolWorkload:
    name: str
    obs_shape: tuple[int, ...]
    num_actions: int
    model: dict
    records: int


POOL_WORKLOADS = {
    w.name: w for w in (
        PoolWorkload("lunarlander-2k", (8,), 4, dict(PRESETS["lunarlander"].model), 2048),
        PoolWorkload("mlp3x512-16k", (8,), 4,
                     {"fcnet_hiddens": [512, 512, 512], "vf_share_layers": False}, 16_384),
        PoolWorkload("minigrid-cnn-64k", (7, 7, 3), 7, dict(PRESETS["minigrid"].model), 65_536),
    )
}


def _pool_workload(w: PoolWorkload, seed: int = 0):
    import gymnasium as gym
    import numpy as np
    from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import (
        DefaultPPOTorchRLModule,
    )
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from iif_ray.attribution import RecordBatch, return_target, target_gradient

    spec = RLModuleSpec(module_class=DefaultPPOTorchRLModule,
                        observation_space=gym.spaces.Box(-1, 1, w.obs_shape, np.float32),
                        action_space=gym.spaces.Discrete(w.num_actions), model_config=w.model)
    torch.manual_seed(seed)
    policy = functional_policy(spec.build())
    obs = torch.rand((w.records, *w.obs_shape)) * (0.04 if len(w.obs_shape) == 3 else 2) - (
        0 if len(w.obs_shape) == 3 else 1)
    actions = torch.randint(0, w.num_actions, (w.records,))
    with torch.no_grad():
        logp = policy.logp(policy.params(), obs, actions)
    adv = torch.randn(w.records)
    _, direction = target_gradient(policy, return_target,
                                   {"obs": obs, "actions": actions, "advantages_raw": adv})
    return spec, policy, RecordBatch(obs, actions, logp, adv), direction


def _records_per_s(scorer, policy, records, direction, reps: int) -> float:
    scorer.score(policy, records, direction, entropy_coeff=0.0)  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        scorer.score(policy, records, direction, entropy_coeff=0.0)
        times.append(time.perf_counter() - t0)
    return len(records) / statistics.median(times)


def bench_pool(workloads: list[str], max_scorers: int | None = None, reps: int = 3,
               echo: Callable[[str], None] = print) -> dict[str, dict[int, float]]:
    """Records/second of in-process scoring (0) vs pools of 1..max_scorers actors.

    Each figure is the median of ``reps`` timed calls after one warm-up call, measured side
    by side in one run. Pools use one CPU per scorer, so ``max_scorers`` defaults to the
    cluster's CPU count.

    Raises:
        ValueError: ``max_scorers`` above the cluster's CPU count (its pool would wait for
            CPUs without bound).
    """
    import ray

    from iif_ray.scoring import LocalScorer
    from iif_ray.scoring.pool import AttributionPool

    cpus = int(ray.cluster_resources().get("CPU", 1))
    if max_scorers is not None and max_scorers > cpus:
        raise ValueError(f"--max-scorers {max_scorers}: a pool uses one CPU per scorer and "
                         f"the cluster has {cpus}; accepted: 1 to {cpus}")
    max_scorers = max_scorers or cpus
    echo(f"cluster: {cpus} CPUs; torch threads in this process: {torch.get_num_threads()}")
    table: dict[str, dict[int, float]] = {}
    for name in workloads:
        w = POOL_WORKLOADS[name]
        spec, policy, records, direction = _pool_workload(w)
        rates = {0: _records_per_s(LocalScorer(), policy, records, direction, reps)}
        for k in range(1, max_scorers + 1):
            pool = AttributionPool({DEFAULT_MODULE: partial(policy_from_spec, spec)}, k,
                                   num_cpus_per_scorer=1.0)
            try:
                rates[k] = _records_per_s(pool, policy, records, direction, reps)
            finally:
                pool.shutdown()
        table[name] = rates
        echo(f"== {name}: {w.records} records, {policy.num_params:,} policy parameters")
        for k, rate in rates.items():
            label = "local (in-process)" if k == 0 else f"pool, {k} scorer(s)"
            echo(f"  {label:<20} {rate:>12,.0f} records/s   x{rate / rates[0]:.2f} vs local")
        # A pool "wins" only when it is clearly faster: 5% absorbs timing noise.
        beats = [k for k in rates if k > 0 and rates[k] > 1.05 * rates[0]]
        echo(f"crossover {name}: " + (
            f"pool beats local from {beats[0]} scorer(s); best {max(rates, key=rates.get)}"
            if beats else "no pool size beats local scoring by more than 5%"))
    return table


CONTENDERS = ("ours", "sb3", "bare")


def bench_speed(presets: list[str], rounds: int = 5,
                num_envs_options: tuple[int, ...] = (1, 8, 16), echo=print) -> dict[str, float]:
    """Seconds per PPO round of ours, SB3 and a bare torch loop, alternating round by round.

    Per preset and sampling layout, the three run one round each in turn, ``rounds + 1``
    times in one process; the first round of each is warm-up. Each round is timed in wall
    time and in this process's CPU time (all its threads): on a busy machine wall time
    stretches with other load, CPU time much less. Ratios are taken round by round (ours
    over the neighbouring SB3 or bare round) and reported as the median with the range over
    the ``rounds`` repeats. Our PPO runs through the identical IIF code path with filtering
    off; with ``num_envs > 1`` all three vectorise sampling the same way (``num_envs``
    environments, ``2048 / num_envs`` steps each per round).

    Returns:
        ``{"<preset>/envs=<n>/ours-vs-<sb3|bare>/<wall|cpu>": median ratio}``.
    """
    require_sb3()
    with torch_threads(1):  # SB3's setting; the caller's count comes back after
        return _speed_rounds(presets, rounds, num_envs_options, echo)


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} [{min(values):.2f}, {max(values):.2f}]"


def _speed_rounds(presets: list[str], rounds: int, num_envs_options: tuple[int, ...],
                  echo) -> dict[str, float]:
    from iif_ray.experiments.bare_ppo import BarePPO

    ratios: dict[str, float] = {}
    echo(f"s/round: median, lowest, highest of {rounds} alternating rounds after a warm-up")
    echo("ratios paired round by round; wall = wall clock, cpu = process CPU time")
    for name in presets:
        preset = get_preset(name)
        for num_envs in num_envs_options:
            algo = build_config(preset, algo="ppo", num_envs=num_envs).build_algo()
            model = make_sb3(preset, 0, num_envs)
            bare = BarePPO(preset, 0, num_envs)
            run = {"ours": algo.train,
                   "sb3": partial(sb3_round, model, preset.steps_per_round),
                   "bare": bare.round}
            times: dict[str, list[tuple[float, float]]] = {c: [] for c in CONTENDERS}
            try:
                for _ in range(rounds + 1):
                    for c in CONTENDERS:
                        times[c].append(_timed(run[c]))
            finally:
                algo.stop()
                bare.close()
            key = f"{name}/envs={num_envs}"
            for clock, j in (("wall", 0), ("cpu", 1)):
                per = {c: [t[j] for t in times[c][1:]] for c in CONTENDERS}
                echo(f"{key} {clock} s/round: " + ", ".join(
                    f"{c} {_spread(per[c])}" for c in CONTENDERS))
                for other in ("sb3", "bare"):
                    r = [o / t for o, t in zip(per["ours"], per[other], strict=True)]
                    ratios[f"{key}/ours-vs-{other}/{clock}"] = statistics.median(r)
                    echo(f"{key} ours/{'SB3' if other == 'sb3' else 'bare'} {clock}: "
                         f"{_spread(r)}")
    return ratios
