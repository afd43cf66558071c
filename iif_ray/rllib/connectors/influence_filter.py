"""The learner connector piece that runs the influence round on the finished batch.

Appended last to the learner pipeline, it runs once per round, before the PPO
minibatch loop. It holds no learner: it is given the round function (score -> select -> drop
-> metrics -> ledger, see :mod:`iif_ray.rllib.influence_round`) and a hook called when every
module's batch is filtered (the learner starts its update clock there). Round metrics go to
the ``metrics`` logger RLlib passes to connector pieces, under ``(module_id, "iif")``.

Pre-conditions: :class:`~iif_ray.rllib.connectors.standardised_gae.StandardisedGAE` ran;
every module's batch holds ``loss_mask`` and one row per env step plus phantom bootstrap rows.

Post-conditions: each module's batch holds only the kept real rows, in the order the round
function chose (shuffled), and no ``loss_mask`` (every remaining row is real).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.utils.annotations import override

from iif_ray.rllib.results import METRICS_KEY

# (module_id, batch columns, that module's episodes in row order) -> (kept columns, metrics)
RoundFunction = Callable[[str, dict, list], tuple[dict, dict[str, float]]]


def episodes_of_module(piece: ConnectorV2, episodes: list, module_id: str) -> list:
    """Single-agent episodes feeding ``module_id``, in batch row order."""
    return [
        e for e in piece.single_agent_episode_iterator(episodes, agents_that_stepped_only=False)
        if e.module_id in (None, module_id)
    ]


class InfluenceFilter(ConnectorV2):
    """Score every real record at theta_k, drop the selected ones, log the round."""

    def __init__(self, input_observation_space=None, input_action_space=None, *,
                 round_fn: RoundFunction | None = None,
                 on_filtered: Callable[[], None] | None = None) -> None:
        super().__init__(input_observation_space, input_action_space)
        self._round_fn = round_fn
        self._on_filtered = on_filtered

    @override(ConnectorV2)
    def __call__(self, *, rl_module: Any, episodes: list, batch: dict, metrics=None,
                 **kwargs) -> dict:
        for module_id in list(batch):
            batch[module_id], round_metrics = self._round_fn(
                module_id, batch[module_id], episodes_of_module(self, episodes, module_id))
            if metrics is not None:
                metrics.log_dict(round_metrics, key=(module_id, METRICS_KEY), window=1)
        if self._on_filtered is not None:
            self._on_filtered()
        return batch
