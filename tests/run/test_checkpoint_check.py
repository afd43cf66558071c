"""``check_checkpoint``: a checkpoint as written passes; one cut short anywhere is named
(the refusal through the command line is a case of tests/cli/test_bad_input.py)."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from iif_ray.run import check_checkpoint, checkpoint_dir


def _checkpoint(run):
    root = checkpoint_dir(run)
    root.mkdir(parents=True)
    torch.save({"learner": {"w": torch.arange(2000.0)}, "round": 3}, root / "learner.pt")
    (root / "nested").mkdir()
    (root / "nested" / "state.pkl").write_bytes(pickle.dumps({"w": list(range(2000))}))
    (root / "rllib_checkpoint.json").write_text(json.dumps({"type": "Algorithm"}))
    return root


def test_a_whole_checkpoint_and_no_checkpoint_pass(tmp_path):
    check_checkpoint(tmp_path / "none")  # nothing to restore: resume starts from round 1
    _checkpoint(tmp_path / "run")
    check_checkpoint(tmp_path / "run")


@pytest.mark.parametrize("name", ["learner.pt", "nested/state.pkl", "rllib_checkpoint.json"])
@pytest.mark.parametrize("keep", [0.1, 0.5, 0.99])
def test_a_file_cut_short_is_named(tmp_path, name, keep):
    root = _checkpoint(tmp_path / "run")
    data = (root / name).read_bytes()
    (root / name).write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(ValueError, match=f"checkpoint file '{root / name}' is "):
        check_checkpoint(tmp_path / "run")
