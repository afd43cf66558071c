"""arith: a verifiable-reward task where records can really be wrong (digit addition).

detox-mini's reward is a classifier's opinion, so "a wrong record" there is a matter of
degree. Here it is a fact: a prompt is ``"371+48="``, the response is the sum's digits then
EOS, and the reward is 1 for an exactly correct answer, 0 otherwise (no sampling noise in the
checker). Corrupting a known share of rewards (:func:`corrupted_rows`, 1 <-> 0) then plants
records whose reward is wrong, and the ledger says which, so a filter's scores can be judged
against the truth (AUROC of scores vs corruption).

* **Problems**: ``a+b`` with ``a, b`` in ``[0, 999]`` (1,000,000 problems). A fixed set of
  :data:`HELD_OUT` problems, chosen by :data:`SPLIT_SEED` whatever the run's seed, is never
  drawn for pre-training, training or validation prompts; evaluation uses them.
* **Tokenizer**: one token per character (digits, ``+``, ``=``) plus the special tokens,
  built from a config and saved with ``save_pretrained`` like detox-mini's.
* **Answers** are written most-significant digit first, as people write them. The model is
  pre-trained on answers half of which are written without carrying (a habit,
  :func:`carry_free_sum`), so it can carry but often does not: RL has a habit to break
  (:class:`iif_ray.lm.pretrain.ArithPretrainSettings` says why a partly-trained model is not
  enough).
* **Evaluation** (no sampling noise): the policy's mean probability of the exact answer on
  the held-out problems (teacher-forced; the expected reward GRPO raises), and the share of
  greedy answers that are exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any

import numpy as np

MAX_OPERAND = 999
HELD_OUT = 500
SPLIT_SEED = 0  # the held-out problems are the same for every run, algorithm and seed
CHARS = tuple("0123456789+=")
# Bump when problems, prompts or answers change: pre-trained models are cached under it.
TASK_VERSION = 2
# Longest answer (999 + 999 = 1998) plus its EOS: what generation needs at most.
ANSWER_TOKENS = len(str(2 * MAX_OPERAND)) + 1
EOS_TEXT = "<eos>"


def char_tokenizer() -> Any:
    """A character-level ``PreTrainedTokenizerFast`` (special tokens first, as the word
    tokenizer's) that decodes ids back to the exact string, specials included when asked."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from iif_ray.lm.models import SPECIAL_TOKENS

    vocab = {tok: i for i, tok in enumerate((*SPECIAL_TOKENS, *CHARS))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()  # "3", "7" -> "37", not "3 7"
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>",
                                        bos_token="<bos>", eos_token=EOS_TEXT,
                                        unk_token="<unk>")
    tokenizer.padding_side = "left"
    return tokenizer


def parse(prompt: str) -> tuple[int, int]:
    """``(a, b)`` of a prompt ``"a+b="``.

    Raises:
        ValueError: another form.
    """
    left, plus, right = prompt.removesuffix("=").partition("+")
    if not (plus and prompt.endswith("=") and left.isdigit() and right.isdigit()):
        raise ValueError(f"not an arith prompt: {prompt!r}; accepted: 'a+b=' with digits")
    return int(left), int(right)


def answer(prompt: str) -> str:
    """The correct response text: the sum's digits then EOS."""
    a, b = parse(prompt)
    return f"{a + b}{EOS_TEXT}"


def carry_free_sum(a: int, b: int) -> int:
    """``a + b`` written digit by digit without carrying (``58 + 67 -> 115``: 8+7 -> 5,
    5+6 -> 11, the top digit pair's sum written whole): the classic learner's slip, and the
    habit pre-training plants (:class:`iif_ray.lm.pretrain.ArithPretrainSettings.habit`)."""
    total, place = 0, 1
    while a >= 10 or b >= 10:
        total += ((a % 10 + b % 10) % 10) * place
        a, b, place = a // 10, b // 10, place * 10
    return total + (a + b) * place


def habit_answer(prompt: str) -> str:
    """The response written with :func:`carry_free_sum`: wrong wherever a carry is due."""
    a, b = parse(prompt)
    return f"{carry_free_sum(a, b)}{EOS_TEXT}"


def reward(prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
    """1.0 where a response (decoded with its special tokens) is exactly the answer, digits
    then EOS with nothing between or after, else 0.0.

    Raises:
        ValueError: the lengths differ, or a prompt is not an arith prompt.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    return np.array([float(r == answer(p)) for p, r in zip(prompts, responses, strict=True)])


def corrupted_rows(n: int, noise: float, seed: int, round_index: int) -> np.ndarray:
    """Which of a round's ``n`` records get a flipped reward: exactly ``round(noise * n)`` of
    them, chosen by ``(seed, round_index)`` alone, so a run and its resumption, and every
    algorithm on the same seed, corrupt the same records (boolean mask)."""
    flags = np.zeros(n, dtype=bool)
    count = round(noise * n)
    if count:
        rng = np.random.default_rng([seed, round_index, 0xA417])
        flags[rng.choice(n, size=count, replace=False)] = True
    return flags


def flip(rewards: np.ndarray, corrupted: np.ndarray) -> np.ndarray:
    """Rewards with the ``corrupted`` ones flipped (1 <-> 0)."""
    return np.where(corrupted, 1.0 - rewards, rewards)


def _key(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a * (MAX_OPERAND + 1) + b


class Problems:
    """The problem family with its fixed held-out split; serves prompts like
    :class:`iif_ray.lm.detox.Language` (``prompts(n, split=, seed=)``)."""

    @cached_property
    def held_out(self) -> np.ndarray:
        """The :data:`HELD_OUT` held-out problems' keys ``a * 1000 + b``, in a fixed order."""
        rng = np.random.default_rng(SPLIT_SEED)
        return rng.choice((MAX_OPERAND + 1) ** 2, size=HELD_OUT, replace=False)

    @cached_property
    def _held_out_set(self) -> np.ndarray:
        return np.sort(self.held_out)

    def is_held_out(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        keys = _key(np.asarray(a), np.asarray(b))
        pos = np.searchsorted(self._held_out_set, keys).clip(max=HELD_OUT - 1)
        return self._held_out_set[pos] == keys

    def train_pairs(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` training problems ``(a, b)`` drawn uniformly by ``seed`` (held-out ones
        redrawn), operands' digit counts mixed as uniform draws mix them."""
        rng = np.random.default_rng([seed, 0x7A1])
        a = np.empty(0, dtype=np.int64)
        b = np.empty(0, dtype=np.int64)
        while len(a) < n:
            x = rng.integers(0, MAX_OPERAND + 1, size=n)
            y = rng.integers(0, MAX_OPERAND + 1, size=n)
            ok = ~self.is_held_out(x, y)
            a, b = np.concatenate([a, x[ok]]), np.concatenate([b, y[ok]])
        return a[:n], b[:n]

    def prompts(self, n: int, *, split: str, seed: int = 2) -> list[str]:
        """``n`` prompts: ``train`` ones drawn by ``seed``; ``eval`` ones are the first ``n``
        held-out problems (the same for every seed: evaluation has no sampling noise).

        Raises:
            ValueError: another split, or more ``eval`` prompts than there are held out.
        """
        if split == "eval":
            if n > HELD_OUT:
                raise ValueError(f"{n} held-out prompts asked for; accepted: 1 to {HELD_OUT}")
            keys = self.held_out[:n]
            a, b = keys // (MAX_OPERAND + 1), keys % (MAX_OPERAND + 1)
        elif split == "train":
            a, b = self.train_pairs(n, seed)
        else:
            raise ValueError(f"unknown prompt split {split!r}; accepted: train, eval")
        return [f"{x}+{y}=" for x, y in zip(a.tolist(), b.tolist(), strict=True)]
