"""Where IIF's per-round figures sit in RLlib's result dict.

The learner and its connector piece log under ``(module_id, "iif")``, so after
``algo.train()`` they appear at ``result["learners"][module_id]["iif"]`` (and Tune, TensorBoard
and W&B see them as ``learners/<module_id>/iif/<name>``).
"""

from __future__ import annotations

from typing import Any

METRICS_KEY = "iif"
DEFAULT_MODULE = "default_policy"


def iif_metrics(result: dict[str, Any], module_id: str = DEFAULT_MODULE) -> dict[str, Any]:
    """The round's IIF metrics for ``module_id`` from an ``algo.train()`` result ({} if none)."""
    return result.get("learners", {}).get(module_id, {}).get(METRICS_KEY, {})
