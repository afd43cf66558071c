"""A seeded two-round LM run reproduces, bit for bit, what it gave when it was recorded.

``tests/data/lm_run_before_run_model.npz`` was recorded with the LM runtime as it stood before
the language-model path moved onto the shared run model (its own ``lm_*`` file names, its own
progress writer): every ledger score and keep decision of a two-round IIF run on a tiny
seeded model, for a learner-scored and an actor-pool-scored run, and the trainable weights
(LoRA adapters and value head) in the final checkpoint. The fingerprint reads only what a
run directory holds, under either set of file names, so it fingerprints runs of both.

The per-record scores then gained PPO's value term (``vf_coef`` x clipped value loss, the
update's own loss; ``tests/lm/test_learner.py::test_scores_include_the_value_term_as_the_
update_does`` checks it against an independent oracle). The value head starts at zero, so
round 1 cannot change and is still held to the first recording; from round 2 on the run is
held to ``lm_run_with_value_term.npz``, recorded with that change alone (round-2 scores moved
by at most 0.0021).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest
import torch

BEFORE = Path(__file__).parents[1] / "data" / "lm_run_before_run_model.npz"
NOW = Path(__file__).parents[1] / "data" / "lm_run_with_value_term.npz"
LEDGER_FIELDS = ("iteration", "group", "reward", "advantage", "score", "kept")
# The checkpoint's file under the run model's names, then under the LM runtime's old ones.
CHECKPOINT_FILES = ("checkpoint/learner.pt", "lm_checkpoint.pt")
CASES = {"learner": 0, "pool": 1}


def fingerprint(run_dir: Path, case: str) -> dict[str, np.ndarray]:
    """Every ledger score and keep decision (round, row order) and the trainable weights."""
    table = ds.dataset(str(run_dir / "ledger"), format="parquet",
                       ignore_prefixes=[".", "_"]).to_table(columns=list(LEDGER_FIELDS))
    out = {f"{case}/ledger/{k}": table[k].to_numpy() for k in LEDGER_FIELDS}
    path = next(run_dir / f for f in CHECKPOINT_FILES if (run_dir / f).is_file())
    state = torch.load(path, weights_only=False)
    out.update({f"{case}/weights/{k}": v.numpy()
                for k, v in sorted(state["learner"]["weights"].items())})
    return out


def train(model_dir: Path, out: Path, num_scorers: int) -> None:
    """Two IIF rounds of PPO on a tiny model, scored by the learner or by one scorer actor."""
    from iif_ray.lm.learner import UpdateSettings
    from iif_ray.lm.spec import LMRunSpec
    from iif_ray.lm.trainer import fit

    spec = LMRunSpec(model=str(model_dir), out_dir=str(out), algo="iif", rounds=2,
                     prompts_per_round=8, group_size=2, validation_prompts=8, eval_every=2,
                     eval_prompts=8, lora_rank=2, num_scorers=num_scorers, cpus_per_scorer=0,
                     update=UpdateSettings(epochs=1, minibatch_size=4), seed=3)
    fit(spec, echo=lambda _: None)


@pytest.mark.ray
@pytest.mark.slow
def test_seeded_lm_run_is_unchanged(ray_local, tiny_model_dir, tmp_path):
    before, first = np.load(NOW), np.load(BEFORE)
    now: dict[str, np.ndarray] = {}
    for case, scorers in CASES.items():
        train(tiny_model_dir, tmp_path / case, scorers)
        now.update(fingerprint(tmp_path / case, case))
    assert sorted(now) == sorted(before.files)
    for case in CASES:
        kept = now[f"{case}/ledger/kept"]
        assert 0 < (~kept).sum() < len(kept), "the run must actually drop records"
        round1 = now[f"{case}/ledger/iteration"] == 1
        for field in ("score", "advantage", "reward"):
            key = f"{case}/ledger/{field}"
            np.testing.assert_allclose(now[key][round1], first[key][round1], rtol=1e-5,
                                       atol=1e-7, err_msg=f"round 1 {key}")
        np.testing.assert_array_equal(kept[round1], first[f"{case}/ledger/kept"][round1])
    for key in before.files:
        if "/weights/" in key or key.endswith(("score", "advantage", "reward")):
            np.testing.assert_allclose(now[key], before[key], rtol=1e-5, atol=1e-7,
                                       err_msg=key)
        else:
            np.testing.assert_array_equal(now[key], before[key], err_msg=key)
