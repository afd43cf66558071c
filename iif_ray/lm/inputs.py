"""A run's model, reward and prompt files, checked before Ray starts.

The actors load these files minutes after the command was typed (a worker process, a model
download's worth of weights); a directory whose config is not JSON, that has no weights, or
whose tokenizer cannot pad would otherwise fail there with a traceback, after Ray started and
the run directory was written. These checks read only configs, tokenizers and file headers
(never the weights themselves), so they take about a second even for a multi-GB model.

Every failure is an :class:`InputError` whose message names the flag, the path and what is
accepted; the command line reports it as its one line.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iif_ray.lm.prompts import PromptFile

# The weight files ``from_pretrained`` reads, single-file and sharded (an index naming the
# shards), in the order transformers prefers them.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
# Config keys that hold a model's context length, by model family.
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length",
                 "seq_length")
_SAVED_BY = "accepted: a directory written by save_pretrained (config.json, weights, tokenizer)"


class InputError(ValueError):
    """A file the run needs cannot be used; the message names it and what is accepted."""


@dataclass(frozen=True)
class ModelDir:
    """What the checks learnt of a model directory: its config and tokenizer, and its context
    length (``None`` where the config states none)."""

    path: Path
    config: Any
    tokenizer: Any
    context: int | None


def _config(path: Path, flag: str) -> Any:
    """The directory's config, as ``from_pretrained`` will read it."""
    from transformers import AutoConfig

    if not path.is_dir():
        raise InputError(f"{flag} {str(path)!r} is not a local model directory; {_SAVED_BY}")
    file = path / "config.json"
    if not file.is_file():
        raise InputError(f"{flag} {str(path)!r} is not a local model directory (no "
                         f"config.json); {_SAVED_BY}")
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{flag} {str(path)!r}: config.json is not JSON ({e}); "
                         f"{_SAVED_BY}") from None
    if not isinstance(raw, dict) or "model_type" not in raw:
        raise InputError(f"{flag} {str(path)!r}: config.json names no model_type; {_SAVED_BY}")
    try:
        return AutoConfig.from_pretrained(path, local_files_only=True)
    except (ValueError, KeyError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"{flag} {str(path)!r}: transformers cannot read config.json "
                         f"({first}); {_SAVED_BY}") from None


def _check_safetensors(file: Path, flag: str, root: Path) -> None:
    """A safetensors file whose header parses and whose size is what the header says: a
    copy cut short fails here, not in a worker."""
    where = f"{flag} {str(root)!r}: weights file {file.name}"
    try:
        with file.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise InputError(f"{where} is truncated ({file.stat().st_size} bytes); "
                                 f"{_SAVED_BY}")
            (n,) = struct.unpack("<Q", head)
            header = json.loads(f.read(n)) if n < file.stat().st_size else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        header = None
    if not isinstance(header, dict):
        raise InputError(f"{where} has no readable safetensors header; {_SAVED_BY}")
    try:
        ends = [int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"]
    except (TypeError, KeyError, IndexError, ValueError):
        ends = []
    if not ends:
        raise InputError(f"{where} holds no readable tensor entries; {_SAVED_BY}")
    end = max(ends)
    size = file.stat().st_size
    if size < 8 + n + end:
        raise InputError(f"{where} is truncated ({size:,} of {8 + n + end:,} bytes); "
                         f"{_SAVED_BY}")


def _check_weights(path: Path, flag: str) -> None:
    present = [name for name in WEIGHT_FILES if (path / name).is_file()]
    if not present:
        raise InputError(f"{flag} {str(path)!r} holds no weights (none of "
                         f"{', '.join(WEIGHT_FILES)}); {_SAVED_BY}")
    name = present[0]
    if name.endswith(".index.json"):
        try:
            shards = set(json.loads((path / name).read_text())["weight_map"].values())
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError,
                AttributeError):
            raise InputError(f"{flag} {str(path)!r}: {name} is not a shard index; "
                             f"{_SAVED_BY}") from None
        missing = sorted(s for s in shards if not (path / s).is_file())
        if missing:
            raise InputError(f"{flag} {str(path)!r}: {name} names missing shard(s) "
                             f"{missing[:3]}; {_SAVED_BY}")
        for shard in sorted(shards):
            if shard.endswith(".safetensors"):
                _check_safetensors(path / shard, flag, path)
    elif name.endswith(".safetensors"):
        _check_safetensors(path / name, flag, path)


def _tokenizer(path: Path, flag: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (ValueError, KeyError, OSError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"{flag} {str(path)!r}: its tokenizer cannot be loaded ({first[:200]}); "
                         f"{_SAVED_BY}") from None


def context_length(config: Any) -> int | None:
    """The model's context length in tokens, from whichever key its family uses."""
    for key in _CONTEXT_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_policy_dir(path: str | Path, flag: str = "--model") -> ModelDir:
    """A causal LM the rollout and learner actors can load and generate with.

    Raises:
        InputError: not a directory, a config that is not JSON or not a causal LM's, no (or
            truncated) weights, or a tokenizer that cannot mark the start of a prompt or pad
            a batch (generation needs a bos token and a pad or eos token).
    """
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING

    path = Path(path)
    config = _config(path, flag)
    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        raise InputError(f"{flag} {str(path)!r} is a {config.model_type!r} model, not a causal "
                         "LM; accepted: a model AutoModelForCausalLM loads (GPT, Llama, ...)")
    heads = list(getattr(config, "architectures", None) or [])
    if any(a.endswith("ForSequenceClassification") for a in heads):
        raise InputError(f"{flag} {str(path)!r} is a classifier (architectures {heads}): it "
                         "would generate with a random LM head; accepted: a causal LM "
                         "(architectures ...ForCausalLM or ...LMHeadModel)")
    tokenizer = _batching_tokenizer(path, flag, "prompts")
    if tokenizer.bos_token_id is None:
        raise InputError(f"{flag} {str(path)!r}: its tokenizer has no bos token, which starts "
                         "every prompt; accepted: a tokenizer with bos_token set")
    return ModelDir(path, config, tokenizer, context_length(config))


def _batching_tokenizer(path: Path, flag: str, what: str) -> Any:
    """The directory's weights checked and its tokenizer loaded, refused when it has neither
    a pad nor an eos token (``what`` it batches could not be padded)."""
    _check_weights(path, flag)
    tokenizer = _tokenizer(path, flag)
    if tokenizer.pad_token is None and tokenizer.eos_token is None:
        raise InputError(f"{flag} {str(path)!r}: its tokenizer has neither a pad nor an eos "
                         f"token, so {what} cannot be batched; accepted: a tokenizer with one "
                         "of them (set pad_token and save_pretrained again)")
    return tokenizer


def check_reward_dir(path: str | Path, label: str | None, flag: str = "--reward") -> None:
    """A text classifier whose ``label`` logit can be the reward.

    A causal LM's directory would load as a classifier with a new, random head (transformers
    only warns), giving a random reward and a run that exits 0; it is refused here.

    Raises:
        InputError: the checks of :func:`check_policy_dir` for a classifier, no
            sequence-classification head, or a ``label`` the head does not have.
    """
    path = Path(path)
    config = _config(path, flag)
    heads = list(getattr(config, "architectures", None) or [])
    if not any(a.endswith("ForSequenceClassification") for a in heads):
        raise InputError(f"{flag} {str(path)!r} has no sequence-classification head "
                         f"(architectures {heads}); a causal LM would get a random reward "
                         "head; accepted: a classifier saved from "
                         "AutoModelForSequenceClassification")
    labels = sorted(str(v) for v in (config.id2label or {}).values())
    if label is not None and label not in labels:
        raise InputError(f"--reward-label {label!r} is not a label of {str(path)!r}; "
                         f"accepted: {labels}")
    _batching_tokenizer(path, flag, "responses")


def check_prompts_fit(prompts: PromptFile, model: ModelDir, max_new_tokens: int,
                      flag: str = "--prompts") -> None:
    """Every prompt, with its bos token and ``max_new_tokens`` of response, inside the
    model's context; a longer one would generate past it (positions the model never learnt,
    and memory without bound). Generation also cuts prompts to :func:`prompt_token_limit`,
    so a caller that skips this check stays bounded.

    Raises:
        InputError: the longest prompt does not fit; the message names the file, the prompt's
            length and the limit.
    """
    limit = prompt_token_limit(model.context, max_new_tokens)
    if limit is None:
        return
    if limit < 1:
        raise InputError(f"--max-new-tokens {max_new_tokens} leaves no room for a prompt in "
                         f"{str(model.path)!r}'s context of {model.context} tokens; accepted: "
                         f"at most {model.context - 2}")
    texts = [t for split in prompts.splits.values() for t in split]
    lengths = [len(ids) for ids in
               model.tokenizer(texts, add_special_tokens=False)["input_ids"]]
    worst = max(range(len(texts)), key=lengths.__getitem__)
    if lengths[worst] > limit:
        n_long = sum(n > limit for n in lengths)
        raise InputError(f"{flag} {str(prompts.path)!r}: {n_long} prompt(s) longer than "
                         f"{limit} tokens (the longest, {lengths[worst]} tokens, begins "
                         f"{texts[worst][:30]!r}); accepted: prompts of at most {limit} tokens "
                         f"(context {model.context} - 1 bos - --max-new-tokens "
                         f"{max_new_tokens})")


def prompt_token_limit(context: int | None, max_new_tokens: int) -> int | None:
    """The longest prompt (in tokens, without its bos) that leaves room for the response in
    the model's context; ``None`` where the context is unknown."""
    return None if context is None else context - 1 - max_new_tokens
