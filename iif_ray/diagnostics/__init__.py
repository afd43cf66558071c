"""``iif-ray diagnose``: pictures (and numbers beside them) of what drove or harmed learning.

Reads a run directory (best ``iif-ray train --ledger-obs ...``) and writes
``RUN/diagnostics/``: ``index.md`` embedding the PNG plots, and the Parquet tables behind
every plot. Modules: ``learning`` (return target), ``behaviour`` (action target),
``intervention`` (retrain one round three ways), ``sequences`` (LM runs: harmful and helpful
sequences), ``graph`` (kNN-graph roughness), ``stats``
(Spearman, Monte-Carlo advantages), ``ledgers`` (loading a run), ``index`` (the report).
"""

from __future__ import annotations

from iif_ray.diagnostics.behaviour import write_probes
from iif_ray.diagnostics.index import diagnose

__all__ = ["diagnose", "write_probes"]
