"""The Stable-Baselines3 baseline (``.[bench]`` for users; the dev install has it, so the
test always runs)."""

from __future__ import annotations

import dataclasses
import tempfile

import torch._dynamo  # noqa: F401  (see the test)

from iif_ray.experiments.sb3 import make_sb3, sb3_round
from iif_ray.experiments.threads import torch_threads
from iif_ray.presets import get_preset


def test_a_round_writes_nothing_to_the_temp_directory(tmp_path, monkeypatch) -> None:
    """SB3's default logger makes a folder ``SB3-<date>`` in the temp directory on every
    ``learn()``; the baseline's model logs nowhere, so a round leaves the temp dir empty.

    torch makes its compile-cache folder (``torchinductor_<user>``) in the temp dir when
    ``torch._dynamo`` is first imported, which the first optimizer does; imported above, it
    is made before the temp dir moves, in this test alone as in a whole test run."""
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
    assert tempfile.gettempdir() == str(temp)
    preset = dataclasses.replace(get_preset("cartpole"), steps_per_round=128, num_epochs=1)
    model = make_sb3(preset, seed=0, num_envs=2)
    with torch_threads(1):
        sb3_round(model, preset.steps_per_round)
        sb3_round(model, preset.steps_per_round)
    assert model.num_timesteps == 2 * preset.steps_per_round
    assert list(temp.iterdir()) == []
