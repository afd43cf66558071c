"""The LM learner: a LoRA policy with a value head, PPO or GRPO updates on the kept rows only.

Framework-free (torch, transformers, peft); the Ray runtime wraps it in an actor. What the
update does with a filtered batch follows what veRL's users learned:

* rows are *removed*, not masked (veRL PR 5838): the update only ever sees the kept rows, so
  dropping records saves the time of their forward and backward passes;
* loss denominators are those of the kept rows (veRL PR 7580): every minibatch's loss is
  aggregated over its own tokens (:class:`~iif_ray.attribution.sequence.PolicyLoss`);
* the kept batch is cut to a multiple of the minibatch size (veRL PR 5228) by
  :func:`trim_to_minibatches`, at random, before the update.

Influence scores use the very loss the update uses (same :class:`PolicyLoss`, same
parameters), at the pre-update weights: with PPO that includes ``vf_coef`` x the clipped
value loss, whose gradient reaches the LoRA adapters through the trunk the value head sits on
(the paper's code scores with TRL's whole PPO loss, value term included).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from iif_ray.attribution.sequence import (
    PolicyLoss,
    SequenceBatch,
    logp_from_logits,
    parameter_set,
    position_ids,
    sequence_losses,
    sequence_scores,
    target_gradient,
    token_values,
    value_losses,
)
from iif_ray.options import above, at_least, check_options, option


@dataclass(frozen=True)
class UpdateSettings:
    """The PPO/GRPO update (the paper's RLHF run: 4 epochs, minibatch 1)."""

    estimator: str = option("ppo", choices=("ppo", "grpo"),
                            help="ppo: value head, GAE, KL in the reward; grpo: "
                                 "group-relative advantages")
    epochs: int = option(4, accepts=at_least(1), help="passes over the kept rows per round")
    minibatch_size: int = option(32, accepts=at_least(1), help="sequences per gradient step")
    lr: float = option(1e-3, accepts=above(0), help="Adam learning rate")
    clip: float = option(0.2, accepts=above(0), help="PPO ratio clip")
    vf_coef: float = option(0.1, accepts=at_least(0), help="value-loss coefficient (ppo)")
    vf_clip: float = option(0.2, accepts=above(0), help="value clip (ppo)")
    max_grad_norm: float = option(1.0, accepts=at_least(0),
                                  help="gradient-norm clip (0: none, as TRL's PPO and the "
                                       "paper's code)")
    kl_coef: float = option(0.0, accepts=at_least(0), help="KL(pi || ref) in the loss (grpo)")
    aggregation: str | None = None  # default: token-mean (ppo), seq-mean-token-mean (grpo)

    def __post_init__(self) -> None:
        check_options(self)

    def policy_loss(self) -> PolicyLoss:
        """The update's per-record loss: the clipped policy loss, plus (ppo) ``vf_coef`` x
        the clipped value loss; GRPO trains no value head, so its loss has no value term."""
        ppo = self.estimator == "ppo"
        agg = self.aggregation or ("token-mean" if ppo else "seq-mean-token-mean")
        return PolicyLoss(clip=self.clip, aggregation=agg, kl_coef=self.kl_coef,
                          vf_coef=self.vf_coef if ppo else 0.0, vf_clip=self.vf_clip)


@dataclass
class ValueTargets:
    """Per-token value estimates at collection time and GAE returns, ``[B, T]`` (PPO)."""

    values: Tensor
    returns: Tensor

    def select(self, rows: Tensor) -> ValueTargets:
        return ValueTargets(self.values[rows], self.returns[rows])

    def to(self, device: torch.device | str) -> ValueTargets:
        return ValueTargets(self.values.to(device), self.returns.to(device))


class LMPolicy(nn.Module):
    """A (peft) causal LM plus a value head on its last hidden state.

    ``values[:, t]`` estimates the return from the state that predicts token ``t``, aligned
    with ``logp[:, t]``; the reference policy is the same model with its adapters disabled.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        hidden = model.config.hidden_size
        self.value_head = nn.Linear(hidden, 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    def logp_and_values(self, batch: SequenceBatch) -> tuple[Tensor, Tensor]:
        out = self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                         position_ids=position_ids(batch.attention_mask),
                         output_hidden_states=True)
        return (logp_from_logits(out.logits, batch.input_ids),
                token_values(self.value_head, out.hidden_states[-1]))

    @torch.no_grad()
    def reference_logp(self, batch: SequenceBatch) -> Tensor:
        with self.model.disable_adapter():
            out = self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                             position_ids=position_ids(batch.attention_mask))
        return logp_from_logits(out.logits, batch.input_ids)

    def scoring_parameters(self) -> dict[str, Tensor]:
        return parameter_set(self.model, "lora")


def score_rows(policy: LMPolicy, batch: SequenceBatch, spec: PolicyLoss,
               target: dict[str, Tensor], method: str = "ghost") -> Tensor:
    """Scores of ``batch``'s rows against ``target``, with the loss denominators ``spec``
    already fixed (to the whole round's batch when ``batch`` is one shard of it)."""
    return sequence_scores(policy.model, policy.scoring_parameters(), batch, spec, target,
                           method, value_head=policy.value_head)


def trim_to_minibatches(kept: Tensor, minibatch_size: int, generator: torch.Generator
                        ) -> Tensor:
    """The kept row indices cut, at random, to a multiple of ``minibatch_size`` (sorted)."""
    n = (len(kept) // minibatch_size) * minibatch_size
    if n == len(kept):
        return kept
    order = torch.randperm(len(kept), generator=generator)[:n]
    return kept[order].sort().values


def clip_fractions(logp: Tensor, rows: SequenceBatch, minibatch_size: int, clip: float
                   ) -> Tensor:
    """Per step, the share of its minibatch's response tokens whose ratio left the clip
    range, from the log-probabilities its forward pass gave (``logp``: an epoch's steps,
    concatenated in the order of ``rows``)."""
    mask = rows.response_mask.float().reshape(-1, minibatch_size * logp.shape[-1])
    ratio = torch.exp(logp - rows.old_logp).reshape(mask.shape)
    clipped = (((ratio - 1).abs() > clip).float() * mask).sum(-1)
    return clipped / mask.sum(-1).clamp(min=1)


@dataclass
class LMLearner:
    """Owns the policy and its optimiser; scores and updates at the pre-update weights."""

    policy: LMPolicy
    settings: UpdateSettings = field(default_factory=UpdateSettings)
    seed: int = 0

    def __post_init__(self) -> None:
        # What the optimiser steps and the update clips, listed once (walking the model's
        # modules for them every step cost more than the clipping itself).
        self.trainable = [p for p in self.policy.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.trainable, lr=self.settings.lr)
        self.generator = torch.Generator().manual_seed(self.seed)

    def state(self) -> dict[str, Any]:
        """Everything an update depends on: trainable weights (adapters, value head), the
        optimiser's moments and the minibatch shuffler, so a resumed run updates exactly as
        an uninterrupted one would."""
        return {"weights": {n: p.detach().clone() for n, p in self.policy.named_parameters()
                            if p.requires_grad},
                "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state()}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state`'s output (strict: every trainable weight must be there)."""
        params = dict(self.policy.named_parameters())
        missing = [n for n, p in params.items() if p.requires_grad and n not in state["weights"]]
        if missing:
            raise ValueError(f"checkpoint lacks trainable weights {missing[:3]}: it was saved "
                             "by a differently configured policy (LoRA rank or targets)")
        with torch.no_grad():
            for n, value in state["weights"].items():
                params[n].copy_(value)
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])

    @torch.no_grad()
    def prepare(self, batch: SequenceBatch, ref_logp: Tensor | None = None
                ) -> tuple[Tensor, Tensor, Tensor]:
        """(old logp, reference logp, values) of the round's batch at the current weights;
        ``ref_logp``: the batch's reference log-probabilities when already known (fixed
        validation responses: the reference never changes), saving that forward pass."""
        logp, values = self.policy.logp_and_values(batch)
        ref = self.policy.reference_logp(batch) if ref_logp is None else ref_logp
        return logp, ref, values

    def target(self, validation: SequenceBatch, weights: Tensor) -> dict[str, Tensor]:
        """``grad f`` of the target ``sum c_jt log pi`` (validation responses) at the current
        weights, over the scoring parameters."""
        return target_gradient(self.policy.model, self.policy.scoring_parameters(), validation,
                               weights)

    def scores(self, batch: SequenceBatch, validation: SequenceBatch, weights: Tensor,
               method: str = "ghost") -> Tensor:
        """Influence of every row on the target ``sum c_jt log pi`` (validation responses)."""
        spec = self.settings.policy_loss().for_batch(batch)
        return score_rows(self.policy, batch, spec, self.target(validation, weights), method)

    def update(self, batch: SequenceBatch, kept: Tensor,
               value_targets: ValueTargets | None = None) -> dict[str, Any]:
        """PPO/GRPO epochs over the kept rows only; returns the update's metrics.

        Raises:
            ValueError: the kept rows are not a multiple of the minibatch size, or PPO
                without value targets.
        """
        s = self.settings
        if len(kept) % s.minibatch_size:
            raise ValueError(f"{len(kept)} kept rows are not a multiple of minibatch_size "
                             f"{s.minibatch_size}; trim them with trim_to_minibatches")
        if s.estimator == "ppo" and value_targets is None:
            raise ValueError("the ppo estimator needs value targets (values and returns)")
        t0 = time.perf_counter()
        loss_spec = s.policy_loss()
        ppo = value_targets is not None and s.estimator == "ppo"
        # Per-step figures stay tensors, read once after the last step: no step waits on a
        # read of the device.
        policy_losses: list[Tensor] = []
        vf_losses: list[Tensor] = []
        clip_fracs: list[Tensor] = []
        for _ in range(s.epochs):
            order = kept[torch.randperm(len(kept), generator=self.generator)]
            # The epoch's rows in step order, gathered once: each minibatch is a slice of them.
            rows = batch.select(order)
            if ppo:
                vt = value_targets.select(order)
                rows = replace(rows, old_values=vt.values, returns=vt.returns)
            epoch_logp = []
            # Denominators of each minibatch's own (kept) tokens and sequences.
            for i, step_spec in enumerate(loss_spec.for_minibatches(rows, s.minibatch_size)):
                sub = rows.select(slice(i * s.minibatch_size, (i + 1) * s.minibatch_size))
                logp, values = self.policy.logp_and_values(sub)
                pg = sequence_losses(logp, sub, step_spec).sum()
                loss = pg
                if ppo:
                    vf = value_losses(values, sub, step_spec).sum()
                    loss = loss + s.vf_coef * vf
                    vf_losses.append(vf.detach())
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if s.max_grad_norm:
                    nn.utils.clip_grad_norm_(self.trainable, s.max_grad_norm)
                self.optimizer.step()
                policy_losses.append(pg.detach())
                epoch_logp.append(logp.detach())
            if epoch_logp:
                clip_fracs.append(clip_fractions(torch.cat(epoch_logp), rows,
                                                 s.minibatch_size, s.clip))
        steps = len(policy_losses)
        # Summed in step order as Python floats, as a per-step read would have summed them.
        sums = {"policy_loss": sum(torch.stack(policy_losses).tolist()) if steps else 0.0,
                "value_loss": sum(torch.stack(vf_losses).tolist()) if vf_losses else 0.0,
                "clip_frac": sum(torch.cat(clip_fracs).tolist()) if steps else 0.0}
        out = {k: v / max(steps, 1) for k, v in sums.items()}
        out.update(rows=len(kept), steps=steps, update_s=time.perf_counter() - t0)
        return out
