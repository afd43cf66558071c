"""A local classifier as the reward (``--reward PATH``), on a tiny model written here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iif_ray.lm.rewards import ClassifierReward


def test_classifier_reward_is_the_labels_probability(classifier_dir):
    path, model, tok = classifier_dir
    reward = ClassifierReward(path, label="nothate", batch_size=2)
    texts = ["the good", "idiot fool the", "kind"]
    got = reward(texts)
    assert got.shape == (3,) and ((got > 0) & (got < 1)).all()
    for text, value in zip(texts, got, strict=True):
        enc = tok([text], return_tensors="pt")
        with torch.no_grad():
            p = torch.softmax(model(**enc).logits, -1)[0, 1].item()
        assert value == pytest.approx(p, abs=1e-5)  # batching and padding change nothing
    np.testing.assert_allclose(ClassifierReward(path)(texts), 1 - got, atol=1e-5)


def test_classifier_reward_errors(classifier_dir, tmp_path):
    path, _, _ = classifier_dir
    with pytest.raises(ValueError, match="'toxic' is not a label"):
        ClassifierReward(path, label="toxic")
    with pytest.raises(FileNotFoundError, match="is not a local model directory"):
        ClassifierReward(tmp_path / "none")
