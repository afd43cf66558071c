"""Prompts from a user's file, served like detox-mini's generated ones.

A run draws three kinds of prompts: each round's training prompts, the validation prompts the
influence target is computed on (both from the ``train`` split), and the fixed held-out
prompts it is evaluated on (the ``eval`` split). :class:`PromptFile` gives a local file the
same ``prompts(n, split=, seed=)`` interface as :class:`iif_ray.lm.detox.Language`, so the
runtime does not care where prompts come from.

Accepted files (nothing is downloaded; a user saves the data set first):

* ``.jsonl``: one JSON object per line with a ``prompt`` field, either a string or an object
  with a ``text`` field, which is how ``allenai/real-toxicity-prompts`` ships its prompts;
* ``.parquet``: a ``prompt`` column of strings (a Hugging Face data set saved with
  ``to_parquet``);
* ``.txt``: one prompt per line.

The held-out split is a fixed share of the file (:data:`EVAL_SHARE`, chosen by a seeded
permutation, so it is the same for every run and algorithm on that file): evaluation never
sees a prompt that training could draw.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

EVAL_SHARE = 0.1
SUFFIXES = (".jsonl", ".parquet", ".txt")
_SPLIT_SEED = 0


class PromptFileError(ValueError):
    """The file cannot be used as prompts; the message says why and what is accepted."""


def _text(value: object) -> str | None:
    """A prompt's text: a string, or the ``text`` of an object holding one; else None."""
    if isinstance(value, dict):
        value = value.get("text")
    return value if isinstance(value, str) else None


def _read(path: Path) -> list[str]:
    try:
        return _read_texts(path)
    except UnicodeDecodeError as e:
        raise PromptFileError(f"--prompts {str(path)!r} is not UTF-8 text (byte {e.start}: "
                              f"{e.reason}); accepted: a UTF-8 {path.suffix} file") from None


def _read_texts(path: Path) -> list[str]:
    if path.suffix == ".txt":
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError) as e:
            raise PromptFileError(f"--prompts {str(path)!r} is not a Parquet file ({e}); "
                                  "accepted: a table with a 'prompt' column saved by "
                                  "to_parquet") from None
        if "prompt" not in table.column_names:
            raise PromptFileError(f"--prompts {str(path)!r} has no 'prompt' column (columns: "
                                  f"{table.column_names})")
        values = table.column("prompt").to_pylist()
        where = "row"
    else:
        values = []
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                values.append(json.loads(line)["prompt"])
            except (json.JSONDecodeError, KeyError, TypeError):
                raise PromptFileError(f"--prompts {str(path)!r} line {i} is not a JSON object "
                                      "with a 'prompt' field") from None
        where = "prompt"
    texts = [_text(v) for v in values]
    for i, (value, text) in enumerate(zip(values, texts, strict=True), start=1):
        if text is None:
            raise PromptFileError(f"--prompts {str(path)!r} {where} {i}: the prompt {value!r} "
                                  "is not a string or an object with a 'text' string")
    return texts


class PromptFile:
    """The prompts of one local file, split into ``train`` and ``eval``.

    Raises:
        PromptFileError: the file is missing, of another kind, unreadable, or holds fewer than
            two non-empty prompts (one for each split).
    """

    def __init__(self, path: str | Path) -> None:
        path = self.path = Path(path)
        if path.suffix not in SUFFIXES:
            raise PromptFileError(f"--prompts {str(path)!r}: accepted: a {', '.join(SUFFIXES)} "
                                  "file")
        if not path.is_file():
            raise PromptFileError(f"--prompts {str(path)!r} is not a file")
        # Distinct prompts: a text repeated in the file must not land in both splits.
        prompts = list(dict.fromkeys(p for p in _read(path) if p.strip()))
        if len(prompts) < 2:
            raise PromptFileError(f"--prompts {str(path)!r} holds {len(prompts)} non-empty "
                                  "prompt(s); accepted: at least 2 (training and held-out)")
        order = np.random.default_rng(_SPLIT_SEED).permutation(len(prompts))
        n_eval = max(1, round(EVAL_SHARE * len(prompts)))
        self.splits = {"eval": [prompts[i] for i in order[:n_eval]],
                       "train": [prompts[i] for i in order[n_eval:]]}

    def prompts(self, n: int, *, split: str, seed: int = 2) -> list[str]:
        """``n`` prompts of ``split``, drawn by ``seed``: without replacement while the split
        has enough of them, with replacement beyond.

        Raises:
            ValueError: another split.
        """
        pool = self.splits.get(split)
        if pool is None:
            raise ValueError(f"unknown prompt split {split!r}; accepted: train, eval")
        rng = np.random.default_rng([seed, len(split)])
        idx = rng.choice(len(pool), size=n, replace=n > len(pool))
        return [pool[i] for i in idx]
