"""iif-ray: influence-filtered PPO (IIF) and local data attribution on Ray RLlib."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["IIFPPO", "IIFConfig", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy, so `import iif_ray.attribution` stays free of Ray and RLlib.
    if name in ("IIFConfig", "IIFPPO"):
        from iif_ray import algorithm

        return getattr(algorithm, name)
    raise AttributeError(f"module 'iif_ray' has no attribute {name!r}")
