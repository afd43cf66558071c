"""Benchmarks that print figures (never timed unit tests).

``scoring``: per preset, run PPO rounds in ``mode="score"`` (every record is scored, none is
dropped), so the scoring time and the full PPO update time of the *same* rounds sit side by
side. The first round carries one-off warm-up costs (lazy imports inside ``torch.func``) and is
reported apart from the steady-state mean the ratio uses.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

from iif_ray.presets import build_config, get_preset
from iif_ray.training import result_row


def bench_scoring(presets: list[str], rounds: int = 4, seed: int = 0,
                  echo: Callable[[str], None] = print) -> dict[str, float]:
    """Return ``{preset: steady-state scoring/update ratio}`` and print a table per preset."""
    if rounds < 2:
        raise ValueError(f"rounds must be >= 2 (one warm-up plus measured rounds), got {rounds}")
    ratios: dict[str, float] = {}
    for name in presets:
        preset = get_preset(name)
        config = build_config(preset, algo="iif", seed=seed, attribution={"mode": "score"})
        algo = config.build_algo()
        try:
            echo(f"== {name}: {preset.env_id}, {preset.steps_per_round} records/round, "
                 f"{preset.num_epochs} epochs x minibatch {preset.minibatch_size}")
            echo(f"{'round':>5} {'records':>8} {'scoring_s':>10} {'update_s':>9} {'ratio':>7}")
            rows = []
            for _ in range(rounds):
                row = result_row(algo.train(), 0.0)
                rows.append(row)
                echo(f"{row['iteration']:>5} {int(row['num_records']):>8} "
                     f"{row['scoring_s']:>10.4f} {row['update_s']:>9.3f} "
                     f"{row['scoring_s'] / row['update_s']:>7.4f}")
        finally:
            algo.stop()
        steady = rows[1:]
        scoring = statistics.mean(r["scoring_s"] for r in steady)
        update = statistics.mean(r["update_s"] for r in steady)
        ratio = scoring / update
        ratios[name] = ratio
        echo(f"warm-up round scoring_s: {rows[0]['scoring_s']:.4f} (excluded from the ratio)")
        echo(f"mean over rounds 2..{rounds}: scoring {scoring:.4f} s, update {update:.3f} s")
        echo(f"scoring/update {name}: {ratio:.4f}")
    return ratios
