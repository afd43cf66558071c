"""Which rows each PPO minibatch holds, as index arrays, in RLlib's exact order.

RLlib's ``MiniBatchCyclicIterator`` slices a ``SampleBatch`` per minibatch, concatenates the
slices with ``concat_samples`` and wraps them in a new ``MultiAgentBatch``: per minibatch it
copies every column twice and builds several Python objects. The PPO update needs only the
rows. :class:`CyclicMinibatches` yields the same rows as index arrays, so the learner can
gather them straight from the batch's tensors (one ``index_select`` per column).

Same rows, same order: it walks the batch cyclically like RLlib (a minibatch may straddle an
epoch boundary; an epoch is counted each time the walk wraps) and, when shuffling, draws each
epoch's permutation with ``np.random.permutation(n)`` at the moment RLlib's
``SampleBatch.shuffle`` draws it, so the global NumPy stream, and therefore every later draw,
stays as it is under RLlib's iterator.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np


class CyclicMinibatches:
    """Row indices of every minibatch, per module, over ``num_epochs`` passes.

    Args:
        num_rows: rows of each module's batch.
        minibatch_size: rows per minibatch (every minibatch is full: the walk wraps).
        num_epochs: passes over every module's batch.
        shuffle: draw a new row order (``np.random.permutation``) at every wrap.
        num_total_minibatches: > 0 fixes the count instead (RLlib's multi-learner option).

    Raises:
        ValueError: an empty module batch or a minibatch size below 1.
    """

    def __init__(self, num_rows: Mapping[str, int], *, minibatch_size: int, num_epochs: int,
                 shuffle: bool, num_total_minibatches: int = 0) -> None:
        if minibatch_size < 1:
            raise ValueError(f"minibatch_size must be >= 1, got {minibatch_size}")
        empty = [mid for mid, n in num_rows.items() if n < 1]
        if empty:
            raise ValueError(f"the batch of module(s) {empty} is empty")
        self._n = dict(num_rows)
        self._size = int(minibatch_size)
        self._epochs = int(num_epochs)
        self._shuffle = bool(shuffle)
        self._total = int(num_total_minibatches)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        order = {mid: np.arange(n) for mid, n in self._n.items()}
        start = dict.fromkeys(self._n, 0)
        covered = dict.fromkeys(self._n, 0)
        count = 0
        while ((self._total == 0 and min(covered.values()) < self._epochs)
               or (self._total > 0 and count < self._total)):
            out = {}
            for mid, n in self._n.items():
                s, need, pieces = start[mid], self._size, []
                # ">=" as RLlib: a walk that ends exactly at the last row wraps (and shuffles)
                # right away, before the next minibatch.
                while s + need >= n:
                    pieces.append(order[mid][s:])
                    need -= n - s
                    s = 0
                    covered[mid] += 1
                    if self._shuffle:
                        order[mid] = order[mid][np.random.permutation(n)]
                if need > 0:
                    pieces.append(order[mid][s:s + need])
                start[mid] = s + need
                out[mid] = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
            yield out
            count += 1
