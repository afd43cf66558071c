"""Prompt files: the formats a user saves a data set in, a fixed held-out split, clear errors."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from iif_ray.lm.prompts import PromptFile, PromptFileError

TEXTS = [f"prompt number {i} about the weather" for i in range(40)]


def _jsonl(path, prompts) -> None:
    # real-toxicity-prompts' shape: {"prompt": {"text": ..., "toxicity": ...}, ...}
    path.write_text("\n".join(json.dumps({"filename": "x", "prompt": {"text": p, "toxicity": 0.1}})
                              for p in prompts) + "\n")


def test_formats_read_the_same_prompts(tmp_path):
    _jsonl(tmp_path / "p.jsonl", TEXTS)
    pq.write_table(pa.table({"prompt": TEXTS}), tmp_path / "p.parquet")
    # A data set saved with to_parquet keeps real-toxicity-prompts' nested prompt objects.
    pq.write_table(pa.table({"prompt": [{"text": p, "toxicity": 0.1} for p in TEXTS]}),
                   tmp_path / "nested.parquet")
    (tmp_path / "p.txt").write_text("\n".join(TEXTS) + "\n\n")
    (tmp_path / "s.jsonl").write_text("\n".join(json.dumps({"prompt": p}) for p in TEXTS))
    (tmp_path / "dup.txt").write_text("\n".join(TEXTS + TEXTS[:10]))  # repeats read once
    splits = [PromptFile(tmp_path / f).splits for f in ("p.jsonl", "p.parquet", "p.txt",
                                                        "s.jsonl", "nested.parquet", "dup.txt")]
    assert all(s == splits[0] for s in splits)
    assert len(splits[0]["eval"]) == 4 and len(splits[0]["train"]) == 36
    assert sorted(splits[0]["eval"] + splits[0]["train"]) == sorted(TEXTS)


def test_draws_are_seeded_and_never_cross_the_split(tmp_path):
    _jsonl(tmp_path / "p.jsonl", TEXTS)
    source = PromptFile(tmp_path / "p.jsonl")
    train = source.prompts(30, split="train", seed=5)
    assert train == PromptFile(tmp_path / "p.jsonl").prompts(30, split="train", seed=5)
    assert train != source.prompts(30, split="train", seed=6)
    assert len(set(train)) == 30 and set(train) <= set(source.splits["train"])
    held_out = source.prompts(10, split="eval", seed=7)  # more than the split: with replacement
    assert set(held_out) <= set(source.splits["eval"])
    assert not set(held_out) & set(source.splits["train"])
    with pytest.raises(ValueError, match="unknown prompt split 'test'"):
        source.prompts(1, split="test")


@pytest.mark.parametrize(("name", "content", "message"), [
    ("p.csv", "a\n", "accepted: a .jsonl, .parquet, .txt file"),
    ("missing.jsonl", None, "is not a file"),
    ("one.txt", "only one\n\n", "holds 1 non-empty prompt(s); accepted: at least 2"),
    ("bad.jsonl", '{"text": "no prompt field"}\n', "line 1 is not a JSON object with a "
                                                   "'prompt' field"),
    ("null.jsonl", '{"prompt": "fine"}\n{"prompt": null}\n', "prompt 2: the prompt None is "
                                                            "not a string"),
    ("notext.jsonl", '{"prompt": {"toxicity": 0.5}}\n', "prompt 1: the prompt"),
])
def test_unusable_files_say_why(tmp_path, name, content, message):
    if content is not None:
        (tmp_path / name).write_text(content)
    with pytest.raises(PromptFileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        PromptFile(tmp_path / name)
