"""Rewards for LM rounds: detox-mini's built-in classifier, or any local text classifier.

``--reward PATH`` loads a Hugging Face sequence-classification model from a local directory
(for the paper's setup, a ``save_pretrained`` copy of
``facebook/roberta-hate-speech-dynabench-r4-target``); the reward of a response is the
classifier's raw logit of the label named by ``--reward-label`` (e.g. ``nothate``), or of
label 0 when none is given, as the paper's code (TRL's detoxification recipe) does: a logit
keeps its contrast where a probability saturates near 0 or 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch


class ClassifierReward:
    """The logit of ``label`` for each text, from a local sequence-classification model,
    batched.

    Raises:
        FileNotFoundError: ``path`` is not a local model directory.
        ValueError: ``label`` is not one of the model's labels.
    """

    def __init__(self, path: str | Path, label: str | None = None, batch_size: int = 64) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"--reward {str(path)!r} is not a local model directory "
                                    "(no config.json); accepted: a classifier written by "
                                    "save_pretrained")
        self.model = AutoModelForSequenceClassification.from_pretrained(
            path, local_files_only=True).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        labels = {str(v): int(k) for k, v in self.model.config.id2label.items()}
        if label is None:
            self.index = 0
        elif label in labels:
            self.index = labels[label]
        else:
            raise ValueError(f"--reward-label {label!r} is not a label of {str(path)!r}; "
                             f"accepted: {sorted(labels)}")
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        out = []
        for start in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(list(texts[start:start + self.batch_size]), padding=True,
                                 truncation=True, return_tensors="pt")
            out.append(self.model(**enc).logits.float()[:, self.index].numpy())
        return np.concatenate(out) if out else np.zeros(0)
