"""A local classifier as the reward (``--reward PATH``), on a tiny model written here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iif_ray.lm.rewards import ClassifierReward


def test_classifier_reward_is_the_labels_logit(classifier_dir):
    path, model, tok = classifier_dir
    reward = ClassifierReward(path, label="nothate", batch_size=2)
    texts = ["the good", "idiot fool the", "kind"]
    got = reward(texts)
    assert got.shape == (3,)
    first = ClassifierReward(path)(texts)  # no label given: label 0's logit
    for i, text in enumerate(texts):
        with torch.no_grad():
            logits = model(**tok([text], return_tensors="pt")).logits[0]
        # One text at a time, unpadded: batching and padding change nothing.
        assert got[i] == pytest.approx(logits[1].item(), abs=1e-5)
        assert first[i] == pytest.approx(logits[0].item(), abs=1e-5)
    assert not np.allclose(first, got)


def test_classifier_reward_errors(classifier_dir, tmp_path):
    path, _, _ = classifier_dir
    with pytest.raises(ValueError, match="'toxic' is not a label"):
        ClassifierReward(path, label="toxic")
    with pytest.raises(FileNotFoundError, match="is not a local model directory"):
        ClassifierReward(tmp_path / "none")
