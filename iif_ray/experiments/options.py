"""What ``iif-ray sweep`` and ``iif-ray demo`` take: settings declared once, Ray-free.

Their fields are declared with :func:`~iif_ray.options.option`, so the two commands generate
their flags from these classes and the classes check the same declarations, whether the
values come from the command line or from a sweep file. Kept apart from the sweep runner
(:mod:`.sweeps`, which imports Ray and RLlib) so that building the command line imports
neither.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from iif_ray.lm import LM_ALGOS
from iif_ray.options import Accepts, at_least, check_options, option
from iif_ray.presets import BENCHMARK_ALGOS, PRESETS, algo_settings, get_preset

# Rounds the demo may run: up to ten times the preset's paper budget.
DEMO_MAX_BUDGET = 10


@dataclass
class SweepOptions:
    """What ``iif-ray sweep`` passes to a sweep file's ``tuners(opts)``.

    Raises:
        ValueError: (on construction) a value outside what its field accepts, an unknown
            preset or algorithm.
    """

    envs: list[str] = option(default_factory=list, metavar="PRESET,...",
                             help="comma-separated presets (default: the sweep's)")
    algos: list[str] = option(default_factory=lambda: list(BENCHMARK_ALGOS),
                              metavar="ALGO,...",
                              help=f"comma-separated algorithms (default: "
                                   f"{','.join(BENCHMARK_ALGOS)})")
    seeds: int = option(3, accepts=at_least(1), help="training seeds per algorithm")
    first_seed: int = option(0, accepts=at_least(0), help="the first seed")
    budget_scale: float = option(1.0, accepts=Accepts(lambda v: 0 < v <= 10, "in (0, 10]"),
                                 help="fraction of each preset's paper budget")
    out: str = option("runs/sweep", metavar="DIR", help="where the sweep's results go")
    max_concurrent: int | None = option(None, accepts=at_least(1),
                                        help="trials trained at once (default: as many as fit)")
    num_envs: int = option(1, accepts=at_least(1), help="environments per env runner")
    # None: EVAL_EPISODES[env]; 0: no in-trial evaluation.
    eval_episodes: int | None = option(None, accepts=at_least(0),
                                       help="evaluation episodes per round inside the trial "
                                            "(0: none; default: the environment's)")
    snapshots: bool = False  # save every round's policy under <out>/policies (for evaluate)
    restart_per_round: bool = False  # the paper's one-process-per-round sampling protocol
    checkpoint_every: int = option(10, accepts=at_least(1),
                                   help="rounds between trial checkpoints (resume points)")
    # Ablations: keys merged into every preset's model config, and a suffix on the algo label
    # so their rows sit beside the plain ones in one rounds file.
    model_overrides: dict[str, Any] = field(default_factory=dict)
    label_suffix: str = ""
    verbose: bool = option(False, help="Tune's own progress tables (each trial's "
                                       "configuration, trial status every 30 s) instead of one "
                                       "line per round")

    def __post_init__(self) -> None:
        check_options(self)
        for env in self.envs:
            get_preset(env)
        for algo in self.algos:
            if algo not in LM_ALGOS:  # the LM engine's own (group-filter ...)
                algo_settings(algo)

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.seeds))

    def grid_tag(self) -> str:
        """What makes one grid differ from another, for experiment names: rerunning the same
        command resumes its experiment, while other seeds, algorithms or budget start their
        own instead of silently resuming (and re-exporting) the old grid."""
        parts = [f"seeds{self.first_seed}-{self.seed_list[-1]}"]
        if tuple(self.algos) != BENCHMARK_ALGOS:
            parts.append("+".join(self.algos))
        if self.budget_scale != 1.0:
            parts.append(f"budget{self.budget_scale:g}")
        if self.num_envs != 1:
            parts.append(f"envs{self.num_envs}")
        if self.restart_per_round:
            parts.append("restart")
        if self.eval_episodes is not None:
            parts.append(f"eval{self.eval_episodes}")
        return "-".join(parts)


@dataclass(frozen=True)
class DemoOptions:
    """What ``iif-ray demo`` runs: PPO and IIF on the same seeds, a few rounds each."""

    preset: str = option("frozenlake", choices=tuple(PRESETS), help="paper preset")
    seeds: int = option(5, accepts=at_least(1),
                        help="training seeds per algorithm (a reading needs 5 or more)")
    rounds: int = option(8, accepts=at_least(1), help="PPO rounds per run (2,048 env steps "
                                                      "each on FrozenLake)")
    out: str = option("runs/demo", metavar="DIR", help="directory for the runs")
    max_concurrent: int = option(2, accepts=at_least(1), help="trials trained at once")
    verbose: bool = option(False, help="Tune's own progress tables instead of one line per "
                                       "round")

    def __post_init__(self) -> None:
        check_options(self)
        limit = DEMO_MAX_BUDGET * get_preset(self.preset).rounds
        if self.rounds > limit:
            raise ValueError(f"rounds {self.rounds} is more than {DEMO_MAX_BUDGET}x the "
                             f"preset's {get_preset(self.preset).rounds}; accepted: 1 to "
                             f"{limit}")
