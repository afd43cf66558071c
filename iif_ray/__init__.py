"""iif-ray: influence-filtered PPO (IIF) and local data attribution on Ray RLlib.

Layers, top to bottom (each imports only from its own row or below; ``pyproject.toml``'s
import-linter contracts enforce it and the README's "Layout" describes every module)::

    L8  cli
    L7  experiments | diagnostics | cluster
    L6  reporting           Ray-free: report.md from committed files
    L5  driver
    L4  ray_session
    L3  rllib | lm          the two engines
    L2  run | scoring | evaluation
    L1  presets
    L0  attribution | envs | ledger | atomic_files | options
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
