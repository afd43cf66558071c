"""Which task an LM run trains: its prompts, its reward's corruption and its checks.

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
    from iif_ray.lm.spec import LMRunSpec


# Each task's own defaults for what the command line leaves out (the run spec's are
# detox-mini's); the nested "update" and "sampling" dicts set those settings' fields.
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "detox": {},
    # GRPO over groups of 8 (a 0/1 reward needs several answers per problem to have a
    # spread); 32 problems x 8 = 256 sequences a round, as detox-mini's 64 x 4; responses
    # only as long as the longest answer; the whole held-out set at every evaluation.
    "arith": {"prompts_per_round": 32, "group_size": 8, "eval_prompts": arith.HELD_OUT,
              "update": {"estimator": "grpo"},
              "sampling": {"max_new_tokens": arith.ANSWER_TOKENS}},
}


def task_spec(task: str, model: str, out_dir: str, *, update: dict[str, Any] | None = None,
              sampling: dict[str, Any] | None = None, **fields: Any) -> LMRunSpec:
    """A run spec of ``task``: ``fields``, ``update`` and ``sampling`` over the task's
    defaults (:data:`TASK_DEFAULTS`), over the dataclasses' own. What ``train-lm --task``
    builds, and what a sweep of the task should.

    Raises:
        KeyError: an unknown task.
        ValueError: a combination the spec refuses.
    """
    from iif_ray.lm.generation import SamplingSettings
    from iif_ray.lm.learner import UpdateSettings
    from iif_ray.lm.spec import LMRunSpec

    defaults = TASK_DEFAULTS[task]
    top = {k: v for k, v in defaults.items() if k not in ("update", "sampling")}
    return LMRunSpec(model=model, out_dir=out_dir, task=task, **{**top, **fields},
                     update=UpdateSettings(**{**defaults.get("update", {}), **(update or {})}),
                     sampling=SamplingSettings(**{**defaults.get("sampling", {}),
                                                  **(sampling or {})}))


def check_task(spec: LMRunSpec) -> None:
    """The task's own rules on a spec (called by the spec's checks).

    Raises:
        ValueError: a combination the task cannot run; the message names the fields.
    """
    if spec.task != "arith":
        if spec.reward_noise:
            raise ValueError(f"reward_noise {spec.reward_noise:g} needs task 'arith' (a 0/1 "
                             f"reward to flip); task {spec.task!r} takes 0")
        return
    if spec.reward or spec.prompts:
        raise ValueError("task 'arith' has its own problems and exact checker: it takes no "
                         "reward classifier or prompt file")
    if spec.eval_prompts > arith.HELD_OUT:
        raise ValueError(f"eval_prompts {spec.eval_prompts} is more than arith's held-out "
                         f"problems; accepted: 1 to {arith.HELD_OUT}")
    if spec.sampling.max_new_tokens < arith.ANSWER_TOKENS:
        raise ValueError(f"max_new_tokens {spec.sampling.max_new_tokens} cannot hold arith's "
                         f"longest answer and its EOS; accepted: >= {arith.ANSWER_TOKENS}")


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
