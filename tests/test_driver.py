"""A seeded run reproduces, bit for bit, what the same command gave before the re-layout.

``tests/data/seeded_run_before_relayout.npz`` was recorded with the flat-module layout (every
ledger score and keep decision of a two-round IIF run on CartPole, and the final weights); the
package moved into layers since, and behaviour must not have moved with it. The fingerprint
reads only what a run directory holds (Parquet ledger, the checkpoint's module state), so the
same function fingerprints runs of either layout.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest

from iif_ray.cli import main

TRAIN_ARGS = ["train", "--preset", "cartpole", "--algo", "iif", "--seed", "0",
              "--timesteps", "4096"]
LEDGER_FIELDS = ("iteration", "t", "action", "advantage", "score", "kept")
MODULE_STATE = "checkpoint/learner_group/learner/rl_module/default_policy/module_state.pkl"
BEFORE = Path(__file__).parent / "data" / "seeded_run_before_relayout.npz"


def fingerprint(run_dir: Path) -> dict[str, np.ndarray]:
    """Every ledger score and keep decision (round order), and the final module weights."""
    table = ds.dataset(str(run_dir / "ledger"), format="parquet",
                       ignore_prefixes=[".", "_"]).to_table(columns=list(LEDGER_FIELDS))
    frame = table.to_pandas().sort_values(["iteration"], kind="stable")
    out = {f"ledger/{k}": frame[k].to_numpy() for k in LEDGER_FIELDS}
    with (run_dir / MODULE_STATE).open("rb") as f:
        state = pickle.load(f)
    out.update({f"weights/{k}": np.asarray(v) for k, v in state.items()})
    return out


@pytest.mark.ray
@pytest.mark.slow
def test_seeded_run_is_unchanged_by_the_relayout(tmp_path) -> None:
    assert main([*TRAIN_ARGS, "--out", str(tmp_path / "run")]) == 0
    now = fingerprint(tmp_path / "run")
    before = np.load(BEFORE)
    assert sorted(now) == sorted(before.files)
    kept = now["ledger/kept"]
    assert 0 < (~kept).sum() < len(kept), "the run must actually drop records"
    for key in before.files:
        if key.startswith("weights/") or key == "ledger/score":
            # Same machine class and torch build: bit-identical. A different CPU may reorder
            # floating-point sums, hence the tiny tolerance.
            np.testing.assert_allclose(now[key], before[key], rtol=1e-5, atol=1e-7,
                                       err_msg=key)
        else:
            np.testing.assert_array_equal(now[key], before[key], err_msg=key)


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("env_id", ["MiniGrid-DoorKey-5x5-v0", "CliffWalking-v1"])
def test_envs_without_a_paper_preset_train_with_sensible_defaults(ray_local, env_id) -> None:
    """Any MiniGrid id gets the MiniGrid CNN (RLlib has no default encoder for 7x7 images);
    an env registered without a time limit gets one, stated in the summary, so episodes end
    and the round reports a return."""
    from iif_ray.driver import RunSpec, run
    from iif_ray.envs import DEFAULT_MAX_EPISODE_STEPS
    from iif_ray.presets import preset_for

    preset = preset_for(env=env_id)
    summary = run(RunSpec(preset=preset, algo="iif", timesteps=preset.steps_per_round))
    assert summary["rounds"] == 1 and summary["env_steps"] == preset.steps_per_round
    assert summary["final_return"] is not None
    if env_id.startswith("MiniGrid"):
        assert "conv_filters" in preset.model
    else:
        assert summary["max_episode_steps"] == DEFAULT_MAX_EPISODE_STEPS
