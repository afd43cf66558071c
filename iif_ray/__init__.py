"""iif-ray: influence-filtered PPO (IIF) and local data attribution on Ray RLlib.

The layout is the map (each layer imports only from its own layer or below):

* L0 ``attribution/`` (pure torch), ``presets``, ``envs``, ``ledger``;
* L1 ``scoring/`` (in-process scorer, Ray actor pool);
* L2 ``rllib/`` (config, learners, the influence round, connectors, module bridge);
* L3 ``run_dir``, ``driver``, ``ray_session``;
* L4 ``experiments/`` (trials, sweeps, baselines, demo, speed runs), ``diagnostics/``,
  ``cluster/``; Ray-free ``reporting/`` (the report from committed CSVs) just below them;
* L5 ``cli/``.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["IIFPPO", "IIFConfig", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy, so `import iif_ray.attribution` stays free of Ray and RLlib.
    if name in ("IIFConfig", "IIFPPO"):
        from iif_ray import rllib

        return getattr(rllib, name)
    raise AttributeError(f"module 'iif_ray' has no attribute {name!r}")
