"""Pre-training detox-mini's policy: a tiny Llama learns the generated language (a few minutes).

The model then writes sentences like the corpus, insults included at the corpus' topic-dependent
rates, which is what RL has to unlearn. The result is a normal local Hugging Face directory
(``save_pretrained``: model and tokenizer), the same kind a user passes with ``--model``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

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


# CPU kernels split their reductions by the thread count, so the same seed trained with 2
# threads and with 16 gives different weights (the cache's directory name would then stand
# for different models on different machines). Pre-training always runs with this many.
PRETRAIN_THREADS = 1


def pretrain(out_dir: str | Path, settings: PretrainSettings = PretrainSettings(),
             echo: Callable[[str], None] = print) -> Path:
    """Train the tiny model on the detox-mini corpus and save it (model, tokenizer, marker).

    Bit-reproducible for a seed on a given CPU type: it trains with
    :data:`PRETRAIN_THREADS` threads whatever the caller's setting (restored after).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(PRETRAIN_THREADS)
    try:
        return _pretrain(Path(out_dir), settings, echo)
    finally:
        torch.set_num_threads(threads)


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
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=settings.lr,
                                                total_steps=settings.steps, pct_start=0.1)
    g = torch.Generator().manual_seed(settings.seed)
    t0, loss_ema = time.perf_counter(), None
    for step in range(1, settings.steps + 1):
        idx = torch.randint(len(rows), (settings.batch_size,), generator=g)
        labels = data[idx].masked_fill(mask[idx] == 0, -100)
        loss = model(input_ids=data[idx], attention_mask=mask[idx], labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        value = loss.item()
        loss_ema = value if loss_ema is None else 0.95 * loss_ema + 0.05 * value
        if step % max(1, settings.steps // 10) == 0 or step == settings.steps:
            echo(f"pretrain step {step}/{settings.steps}: loss {loss_ema:.3f} "
                 f"({time.perf_counter() - t0:.0f} s)")
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / MARKER).write_text(json.dumps({**asdict(settings), "final_loss": loss_ema,
                                          "seconds": time.perf_counter() - t0}, indent=1))
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
