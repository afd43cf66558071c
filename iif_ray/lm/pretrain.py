"""Pre-training detox-mini's policy: a tiny Llama learns the generated language (a few minutes).

The model then writes sentences like the corpus, insults included at the corpus' topic-dependent
rates, which is what RL has to unlearn. The result is a normal local Hugging Face directory
(``save_pretrained``: model and tokenizer), the same kind a user passes with ``--model``.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from iif_ray.lm.detox import CORPUS_VERSION, Language, vocabulary
from iif_ray.lm.models import tiny_llama, word_tokenizer

MARKER = "detox_mini.json"  # written last: its presence means the directory is complete


@dataclass(frozen=True)
class PretrainSettings:
    steps: int = 1500
    batch_size: int = 64
    lr: float = 3e-3
    sentences: int = 50_000
    hidden: int = 128
    layers: int = 4
    seed: int = 0


@contextmanager
def one_thread() -> Iterator[None]:
    """torch on one CPU thread inside the block (the caller's count restored after).

    A float sum's value can depend on how a kernel splits it across threads, so a
    pre-training on another thread count (another machine, or a busy one's default) could
    end in other weights; one thread rules that out. (At the tiny models' sizes no
    difference between one and two threads was measured: this is a guard, the tests check
    the outcome, same seed -> same weights.)
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def train_rows(model: torch.nn.Module, data: torch.Tensor, mask: torch.Tensor,
               labels: torch.Tensor, *, steps: int, batch_size: int, lr: float, seed: int,
               echo: Callable[[str], None] = print) -> tuple[float, float]:
    """Next-token training of ``model`` on rows of ``data`` (``labels`` -100 where no loss
    counts), batches drawn by ``seed``'s own generator, AdamW with a one-cycle schedule, on
    one thread (:func:`one_thread`): the same arguments give the same weights.

    Returns:
        (the loss's moving average at the end, seconds).
    """
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps,
                                                pct_start=0.1)
    g = torch.Generator().manual_seed(seed)
    t0, loss_ema = time.perf_counter(), math.nan
    with one_thread():
        for step in range(1, steps + 1):
            idx = torch.randint(len(data), (batch_size,), generator=g)
            loss = model(input_ids=data[idx], attention_mask=mask[idx], labels=labels[idx]).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            value = loss.item()
            loss_ema = value if step == 1 else 0.95 * loss_ema + 0.05 * value
            if step % max(1, steps // 10) == 0 or step == steps:
                echo(f"pretrain step {step}/{steps}: loss {loss_ema:.3f} "
                     f"({time.perf_counter() - t0:.0f} s)")
    return loss_ema, time.perf_counter() - t0


def pretrain(out_dir: str | Path, settings: PretrainSettings = PretrainSettings(),
             echo: Callable[[str], None] = print) -> Path:
    """Train the tiny model on the detox-mini corpus and save it (model, tokenizer, marker).

    Bit-reproducible for a seed on a given CPU type: it trains on one thread whatever the
    caller's setting (:func:`train_rows`).
    """
    return _pretrain(Path(out_dir), settings, echo)


def _pretrain(out: Path, settings: PretrainSettings, echo: Callable[[str], None]) -> Path:
    lang = Language.build(settings.seed)
    tokenizer = word_tokenizer(lang.clean + lang.insults)
    sentences = lang.corpus(settings.sentences, seed=settings.seed + 1)
    rows = [[tokenizer.bos_token_id, *tokenizer(s, add_special_tokens=False)["input_ids"],
             tokenizer.eos_token_id] for s in sentences]
    width = max(len(r) for r in rows)
    data = torch.full((len(rows), width), tokenizer.pad_token_id)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        data[i, :len(r)] = torch.tensor(r)
        mask[i, :len(r)] = 1
    model = tiny_llama(len(tokenizer), hidden=settings.hidden, layers=settings.layers,
                       intermediate=4 * settings.hidden, heads=4, seed=settings.seed)
    loss_ema, seconds = train_rows(model, data, mask, data.masked_fill(mask == 0, -100),
                                   steps=settings.steps, batch_size=settings.batch_size,
                                   lr=settings.lr, seed=settings.seed, echo=echo)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / MARKER).write_text(json.dumps({**asdict(settings), "final_loss": loss_ema,
                                          "seconds": seconds}, indent=1))
    return out


def detox_model(cache_dir: str | Path, settings: PretrainSettings = PretrainSettings(),
                echo: Callable[[str], None] = print) -> Path:
    """The pre-trained detox-mini model under ``cache_dir``, trained first when missing."""
    # The digest of the vocabulary and the corpus version names the directory: a model
    # pre-trained on another word list or corpus (another detox-mini) is never picked up.
    clean, insults = vocabulary()
    words = hashlib.sha1("\n".join((f"corpus {CORPUS_VERSION}", *clean, *insults))
                         .encode()).hexdigest()[:8]
    path = Path(cache_dir) / (f"detox-mini-{words}-h{settings.hidden}-l{settings.layers}"
                              f"-s{settings.seed}")
    marker = path / MARKER
    if marker.exists() and json.loads(marker.read_text()).get("steps") == settings.steps:
        return path
    echo(f"pre-training the detox-mini model into {path} (once)")
    return pretrain(path, settings, echo)


ARITH_MARKER = "arith.json"  # written last, as MARKER


@dataclass(frozen=True)
class ArithPretrainSettings:
    """arith's pre-training: a model that can carry but has a habit of not doing so, which
    RL can break (see :func:`pretrain_arith`).

    ``habit`` is the share of pre-training answers written without carrying
    (:func:`iif_ray.lm.arith.carry_free_sum`, a learner's classic slip), so the model learns
    both ways and answers a problem that needs a carry right about half the time. Without a
    habit to break (the model only half-way through learning to carry, 43.8% greedy held-out
    accuracy), GRPO did not raise held-out accuracy within 60 rounds: each round's update
    fitted its own 32 problems (their answers' log-probabilities moved by +0.2 / -0.6) and
    did not carry over to others. With the habit it does, by sharpening toward the right
    way the model already knows, which is what RL with verifiable rewards is known to do.

    Measured (one thread, seed 0): 3,200 steps of 64 problems take about 7 minutes on a quiet
    core; held-out greedy accuracy 50.2%, the policy's mean probability of the exact answer
    0.477. Learning to carry is abrupt (2,400 steps with the habit: 0.6%), so the steps are
    pinned here, and the same settings give the same weights bit for bit.
    """

    steps: int = 3200
    batch_size: int = 64
    lr: float = 3e-3
    problems: int = 100_000
    hidden: int = 128
    layers: int = 4
    seed: int = 0
    habit: float = 0.5


def pretraining_answers(prompts: list[str], settings: ArithPretrainSettings) -> list[str]:
    """The answers pre-training teaches: a ``settings.habit`` share of the prompts, chosen
    by the seed, written without carrying, the rest right."""
    from iif_ray.lm.arith import answer, habit_answer

    slips = np.random.default_rng([settings.seed, 0x5119]).random(len(prompts)) < settings.habit
    return [habit_answer(p) if slip else answer(p)
            for p, slip in zip(prompts, slips, strict=True)]


def pretrain_arith(out_dir: str | Path,
                   settings: ArithPretrainSettings = ArithPretrainSettings(),
                   echo: Callable[[str], None] = print) -> Path:
    """Train the tiny model to answer arith's training problems and save it (model,
    character tokenizer, marker), a ``settings.habit`` share of them (chosen by the seed)
    written without carrying. The loss counts the answer and its EOS only: the operands are
    uniform digits no model can predict."""
    from iif_ray.lm.arith import Problems, char_tokenizer

    out = Path(out_dir)
    tokenizer = char_tokenizer()
    a, b = Problems().train_pairs(settings.problems, seed=settings.seed)
    prompts = [f"{x}+{y}=" for x, y in zip(a.tolist(), b.tolist(), strict=True)]
    rows = [[tokenizer.bos_token_id, *tokenizer(p + r, add_special_tokens=False)["input_ids"]]
            for p, r in zip(prompts, pretraining_answers(prompts, settings), strict=True)]
    width = max(len(r) for r in rows)
    data = torch.full((len(rows), width), tokenizer.pad_token_id)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    labels = torch.full((len(rows), width), -100)
    for i, (p, r) in enumerate(zip(prompts, rows, strict=True)):
        data[i, :len(r)] = torch.tensor(r)
        mask[i, :len(r)] = 1
        start = 1 + len(p)  # BOS and the prompt's characters
        labels[i, start:len(r)] = data[i, start:len(r)]
    model = tiny_llama(len(tokenizer), hidden=settings.hidden, layers=settings.layers,
                       intermediate=4 * settings.hidden, heads=4, max_positions=32,
                       seed=settings.seed)
    loss_ema, seconds = train_rows(model, data, mask, labels, steps=settings.steps,
                                   batch_size=settings.batch_size, lr=settings.lr,
                                   seed=settings.seed, echo=echo)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / ARITH_MARKER).write_text(json.dumps({**asdict(settings), "final_loss": loss_ema,
                                                "seconds": seconds}, indent=1))
    return out


def arith_model(cache_dir: str | Path,
                settings: ArithPretrainSettings = ArithPretrainSettings(),
                echo: Callable[[str], None] = print) -> Path:
    """The pre-trained arith model under ``cache_dir``, trained first when missing (a
    directory without its marker, an interrupted pre-training, is trained again)."""
    from iif_ray.lm.arith import TASK_VERSION

    path = Path(cache_dir) / (f"arith-v{TASK_VERSION}-h{settings.hidden}-l{settings.layers}"
                              f"-n{settings.steps}-s{settings.seed}"
                              + (f"-c{settings.habit:g}" if settings.habit else ""))
    marker = path / ARITH_MARKER
    if marker.exists() and json.loads(marker.read_text()) == {
            **json.loads(marker.read_text()), **asdict(settings)}:
        return path
    echo(f"pre-training the arith model into {path} (once)")
    return pretrain_arith(path, settings, echo)
