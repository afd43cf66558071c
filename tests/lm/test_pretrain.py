"""Pre-training is bit-reproducible: the same seed gives the same weights."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from iif_ray.lm.pretrain import PretrainSettings, pretrain


@pytest.mark.slow
def test_two_pretrainings_with_one_seed_give_identical_weights(tmp_path):
    """Also when the callers run with different thread counts (a 2-core box and a Ray worker
    with one thread): before pre-training fixed its own, these weights differed."""
    settings = PretrainSettings(steps=4, batch_size=8, sentences=200, hidden=16, layers=1)
    threads = torch.get_num_threads()
    weights = []
    try:
        for i, n in enumerate((2, 1)):
            torch.set_num_threads(n)
            out = pretrain(tmp_path / str(i), settings, echo=lambda _: None)
            assert torch.get_num_threads() == n  # the caller's setting comes back
            weights.append(load_file(str(out / "model.safetensors")))
    finally:
        torch.set_num_threads(threads)
    assert weights[0].keys() == weights[1].keys()
    for name in weights[0]:
        assert torch.equal(weights[0][name], weights[1][name]), name
    other = pretrain(tmp_path / "other", PretrainSettings(**{**settings.__dict__, "seed": 1}),
                     echo=lambda _: None)
    assert not torch.equal(load_file(str(other / "model.safetensors"))["lm_head.weight"],
                           weights[0]["lm_head.weight"])
