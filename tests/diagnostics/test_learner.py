"""The diagnostics learner's hooks: a forced keep mask for one round, the target after it."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns

from iif_ray.diagnostics.learner import DiagnosticLearner
from iif_ray.ledger import read_ledger
from tests.rllib.test_iif_learner import N_STEPS, build, ledger_obs, make_config, rows, update


class RecordingDiagnosticLearner(DiagnosticLearner):
    """Remembers the observations of every minibatch the loss is computed on."""

    seen: list[np.ndarray]

    def build(self) -> None:
        super().build()
        self.seen = []

    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out):
        self.seen.append(batch[Columns.OBS].detach().cpu().numpy().copy())
        return super().compute_loss_for_module(module_id=module_id, config=config, batch=batch,
                                               fwd_out=fwd_out)


def diagnostic_config(ledger_dir: str, **attribution):
    return make_config(ledger_dir, learner_class=RecordingDiagnosticLearner, **attribution)


def test_forced_keep_replaces_the_selection_for_one_round(tmp_path) -> None:
    """The targeted intervention's hook: the given mask decides what trains, once."""
    learner, episodes = build(diagnostic_config(str(tmp_path), drop_fraction=0.5))
    mask = np.arange(N_STEPS) % 3 != 0
    learner.forced_keep = mask
    update(learner, episodes)
    table = read_ledger(str(tmp_path))
    np.testing.assert_array_equal(table.column("kept").to_numpy(zero_copy_only=False), mask)
    assert set(rows(np.concatenate(learner.seen))) == set(rows(ledger_obs(table, mask)))
    assert learner.forced_keep is None


def test_target_value_is_the_target_at_the_current_parameters(tmp_path) -> None:
    """Before the update it is the logged ``target_value``; after it, the same probes'
    mean log-probability under the updated policy."""
    learner, episodes = build(diagnostic_config(str(tmp_path), mode="score", target="action",
                                          target_options={"action": 1}))
    before = copy.deepcopy(learner.get_state())
    logged = update(learner, episodes)["iif"]["target_value"]
    batch = learner.last_target_batch
    module = learner.module["default_policy"]
    with torch.no_grad():
        logits = module.forward_train(
            {Columns.OBS: batch["obs"][batch["actions"] == 1]})[Columns.ACTION_DIST_INPUTS]
        expected = torch.log_softmax(logits, -1)[:, 1].mean().item()
    assert learner.target_value() == pytest.approx(expected, rel=1e-5)
    assert expected != pytest.approx(logged, rel=1e-6)  # the update moved it
    learner.set_state(before)
    assert learner.target_value() == pytest.approx(logged, rel=1e-5)
