"""Connector pieces: those IIF appends to RLlib's default learner pipeline, one per file,
and, in ``sampling.py``, the env runner's lean env-to-module / module-to-env pair."""

from iif_ray.rllib.connectors.influence_filter import InfluenceFilter
from iif_ray.rllib.connectors.standardised_gae import ADVANTAGES_RAW, StandardisedGAE

__all__ = ["ADVANTAGES_RAW", "InfluenceFilter", "StandardisedGAE"]
