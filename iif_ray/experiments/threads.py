"""Torch's thread count for in-process timings, given back afterwards.

Benchmarks time in one thread (as a learner actor or SB3 runs), but they run inside other
processes too (the CLI, the test suite): a thread count left changed alters every later
float reduction in that process.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
