"""``iif-ray bench lm`` prints where a round's seconds go, scoring and update seconds and their
ratios (tiny sizes); its instrumented update loop updates as the production loop does."""

from __future__ import annotations

import copy
import re

import pytest
import torch

from iif_ray.experiments.lm_speed import UPDATE_PARTS, bench_lm, update_parts
from iif_ray.lm.learner import LMLearner, UpdateSettings
from tests.lm.test_learner import _batch, _policy, _prepared


def test_bench_lm_prints_ratios_side_by_side():
    lines: list[str] = []
    ratios = bench_lm(sequences=8, minibatches=(1, 4), epochs=1, methods=("ghost",), reps=1,
                      echo=lines.append)
    assert set(ratios) == {"ghost/mb1", "ghost/mb4"} and all(r > 0 for r in ratios.values())
    text = "\n".join(lines)
    assert re.search(r"update \(minibatch 1\): [\d.]+ s per round \(8 steps\)", text)
    assert "scoring/update lm ghost minibatch 4:" in text
    for part in ("generation", "reward", "prepare", "validation", "scoring (ghost)", "update",
                 "round", *UPDATE_PARTS, "total"):
        assert re.search(rf"^  {re.escape(part)} +[\d.]+ +[\d.]+% +[\d.]+ +[\d.]+%$", text,
                         re.MULTILINE), part
    # Each table's last row is its whole.
    assert len(re.findall(r"^  (round|total) +[\d.]+ +100\.0% +[\d.]+ +100\.0%$", text,
                          re.MULTILINE)) == 2


def test_bench_lm_gives_the_thread_count_back():
    before = torch.get_num_threads()
    bench_lm(sequences=4, minibatches=(4,), epochs=1, methods=("ghost",), reps=1,
             echo=lambda _: None)
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("estimator", ["ppo", "grpo"])
def test_the_timed_loop_updates_as_the_learner_does(estimator):
    """The bench times a copy of the update's loop: it must take the same steps, so it leaves
    the same weights, optimiser state and shuffler as ``LMLearner.update``."""
    base = _policy()
    full, targets = _prepared(base, _batch(), estimator)
    settings = UpdateSettings(estimator=estimator, minibatch_size=2, epochs=2)
    kept = torch.tensor([0, 2, 3, 5, 6, 7])
    a = LMLearner(copy.deepcopy(base), settings, seed=3)
    a.update(full, kept, targets)
    b = LMLearner(copy.deepcopy(base), settings, seed=3)
    parts = update_parts(b, full, kept, targets)
    for (name, pa), (_, pb) in zip(a.policy.named_parameters(), b.policy.named_parameters(),
                                   strict=True):
        assert torch.equal(pa, pb), name
    assert torch.equal(a.generator.get_state(), b.generator.get_state())
    assert set(parts) == {*UPDATE_PARTS, "total"} and parts["total"] > 0
    assert sum(parts[p] for p in UPDATE_PARTS) == pytest.approx(parts["total"])
