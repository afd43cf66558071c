"""Which task an LM run trains: its prompts and its reward's corruption (its defaults and
checks live with the spec, :mod:`.spec`).

Two tasks share the runtime (:mod:`.trainer`), the ledger and the report:

* ``detox`` (:mod:`.detox`): a classifier's reward, or a user's own classifier and prompt
  file; evaluation samples held-out prompts and reads another detector.
* ``arith`` (:mod:`.arith`): digit addition with an exact checker; evaluation is greedy
  exact accuracy on fixed held-out problems (``eval_reward``, the same column as detox's
  held-out reward, so the report reads both alike), and ``reward_noise`` flips a seeded share
  of each round's rewards, marked in the ledger's ``corrupted`` column.

Validation responses (the influence target's) are rewarded without corruption: the target
stands for the objective a user trusts, as the paper's held-out validation set does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from iif_ray.lm import arith

if TYPE_CHECKING:
    from iif_ray.lm.spec import LMRunSpec  # the spec's module imports nothing from here


def prompt_source(spec: LMRunSpec) -> Any:
    """What serves the run's prompts (``prompts(n, split=, seed=)``)."""
    if spec.task == "arith":
        return arith.Problems()
    if spec.prompts:
        from iif_ray.lm.prompts import PromptFile

        return PromptFile(spec.prompts)
    from iif_ray.lm.detox import Language

    return Language.build(0)


def corrupt(spec: LMRunSpec, round_index: int, rewards: torch.Tensor
            ) -> tuple[torch.Tensor, np.ndarray]:
    """Round ``round_index``'s rewards as the learner sees them, and which were flipped
    (:func:`iif_ray.lm.arith.corrupted_rows`; none without ``reward_noise``)."""
    flags = arith.corrupted_rows(len(rewards), spec.reward_noise, spec.seed, round_index)
    if not flags.any():
        return rewards, flags
    flipped = arith.flip(rewards.numpy().astype(np.float64), flags)
    return torch.as_tensor(flipped, dtype=rewards.dtype), flags
