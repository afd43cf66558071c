"""Influence scores for sequence records: one prompt -> response per record (the paper's RLHF half).

A record ``i`` is a token sequence whose response tokens (``response_mask``) carry the PPO or
GRPO policy loss. Its training loss ``l_i(theta)`` is its share of the update's loss, aggregated
exactly as the update aggregates it (:class:`PolicyLoss`; PPO's value term included,
:func:`record_losses`), so ``sum_i l_i`` *is* the loss of the batch. The target
``f(theta) = sum_j sum_t c_jt log pi(y_jt | x_j, y_j<t)`` is a weighted log-likelihood of
validation responses (:func:`target_weights`: the paper's ``seq-return`` f^seq, a
reward-weighted variant, or GRPO's group-relative advantages). As in the classic path,

    I_i = -< grad l_i(theta_k), grad f(theta_k) >

over a chosen parameter set (LoRA A/B, or any ``nn.Linear`` layers): positive helps the target,
negative harms it.

Three exact ways to compute all ``I_i`` (they agree to float rounding; the tests check it):

* :func:`scores_ghost`: ``grad f`` is one ordinary backward pass; then, for every Linear layer
  in the set, ``<grad_W l_i, G_W> = sum_t delta_it . (G_W x_it)`` from the layer's inputs
  ``x`` and output gradients ``delta`` of one batched backward of ``sum_i l_i`` (records do not
  interact in a causal LM, so each record's ``delta`` is its own). No per-sample gradient is
  ever formed: the cost is about one forward and backward of the batch.
* :func:`scores_jvp`: one forward-mode pass of ``l(theta)`` along the tangent ``grad f``.
* :func:`scores_bruteforce`: one backward per record, each on its own unpadded sequence: the
  oracle.

The model is any module called as ``model(input_ids=..., attention_mask=...,
position_ids=...)`` that returns ``.logits`` (every Hugging Face causal LM, with or without
peft). Positions come from the attention mask, so left padding does not change a record.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp

AGGREGATIONS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")


@dataclass(frozen=True)
class SequenceBatch:
    """Records as the learner holds them, ``[B, T]`` each, right- or left-padded.

    ``response_mask`` marks the tokens whose log-probability the loss uses (the response);
    ``old_logp`` the rollout policy's log-probabilities of those tokens and ``advantages``
    their advantages (GRPO: the sequence's advantage on every response token).
    """

    input_ids: Tensor
    attention_mask: Tensor
    response_mask: Tensor
    old_logp: Tensor | None = None
    advantages: Tensor | None = None
    ref_logp: Tensor | None = None
    # PPO's value targets: the value head's estimates at collection time and the GAE
    # returns, which the value term of a record's loss needs (:func:`value_losses`).
    old_values: Tensor | None = None
    returns: Tensor | None = None

    def _map(self, fn: Callable[[Tensor], Tensor]) -> SequenceBatch:
        return SequenceBatch(**{f.name: None if getattr(self, f.name) is None
                                else fn(getattr(self, f.name)) for f in fields(self)})

    def select(self, rows: Tensor | list[int] | slice) -> SequenceBatch:
        return self._map(lambda t: t[rows])

    def to(self, device: torch.device | str) -> SequenceBatch:
        """The same records on ``device`` (the learner's or a scorer's GPU, or back to CPU)."""
        return self._map(lambda t: t.to(device))

    def unpadded(self, i: int) -> SequenceBatch:
        """Record ``i`` alone, its padding removed (what a batch of one would hold)."""
        keep = self.attention_mask[i].bool()
        return self._map(lambda t: t[i][keep][None])


@dataclass(frozen=True)
class PolicyLoss:
    """The clipped policy loss and how the update aggregates it.

    aggregation: ``token-mean`` (all response tokens of the batch weigh the same: PPO in TRL
        and veRL's default), ``seq-mean-token-mean`` (each sequence's token mean, then the mean
        over sequences: GRPO's original) or ``seq-mean-token-sum``.
    token_count / seq_count: the denominators, when the update's batch differs from the
        scored one (a minibatch); default: this batch's.
    kl_coef: weight of the k3 estimate of KL(pi || ref) per token (GRPO), with ``ref_logp``.
    vf_coef / vf_clip: weight and clip of PPO's value loss (TRL's: ``0.5 * max((V - R)^2,
        (V_clipped - R)^2)``, a mean over the same response tokens), with ``old_values`` and
        ``returns``. A value head shares the trunk with the policy, so its loss moves the
        LoRA adapters too: a record's loss includes it wherever the update's does.
    """

    clip: float = 0.2
    aggregation: str = "token-mean"
    kl_coef: float = 0.0
    token_count: float | None = None
    seq_count: float | None = None
    vf_coef: float = 0.0
    vf_clip: float = 0.2

    def __post_init__(self) -> None:
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"unknown aggregation {self.aggregation!r}; accepted: "
                             f"{list(AGGREGATIONS)}")
        if not 0 < self.clip < 1:
            raise ValueError(f"clip must be in (0, 1), got {self.clip}")

    def for_batch(self, batch: SequenceBatch) -> PolicyLoss:
        """Fix the denominators to this batch's, so sub-batches keep the same scale."""
        mask = batch.response_mask.float()
        return replace(self, token_count=self.token_count or float(mask.sum()),
                       seq_count=self.seq_count or float(mask.shape[0]))

    def for_minibatches(self, batch: SequenceBatch, size: int) -> list[PolicyLoss]:
        """:meth:`for_batch` of each ``size`` consecutive rows of ``batch`` (whose rows are
        a multiple of ``size``), their token counts read from the device at once."""
        mask = batch.response_mask.float()
        counts = mask.reshape(-1, size * mask.shape[-1]).sum(-1).tolist()
        return [replace(self, token_count=self.token_count or c,
                        seq_count=self.seq_count or float(size)) for c in counts]


def position_ids(attention_mask: Tensor) -> Tensor:
    """0, 1, 2, ... over each row's real tokens (pads get 0): padding does not shift them."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def logp_from_logits(logits: Tensor, input_ids: Tensor) -> Tensor:
    """``[B, T]``: log pi(token_t | tokens_<t) from logits ``[B, T, V]``; position 0 is 0."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    taken = torch.gather(logp, -1, input_ids[:, 1:, None]).squeeze(-1)
    return torch.cat([torch.zeros_like(taken[:, :1]), taken], dim=1)


def token_logp(model: Callable[..., Any], batch: SequenceBatch) -> Tensor:
    """``[B, T]``: log pi(token_t | tokens_<t); position 0 (nothing before it) is 0."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                   position_ids=position_ids(batch.attention_mask)).logits
    return logp_from_logits(logits, batch.input_ids)


def sequence_losses(logp: Tensor, batch: SequenceBatch, spec: PolicyLoss) -> Tensor:
    """``[B]``: each record's share of the update's loss; their sum is the batch loss."""
    mask = batch.response_mask.float()
    old = logp.detach() if batch.old_logp is None else batch.old_logp
    adv = batch.advantages
    ratio = torch.exp(logp - old)
    clipped = torch.clamp(ratio, 1 - spec.clip, 1 + spec.clip)
    per_token = -torch.minimum(ratio * adv, clipped * adv)
    if spec.kl_coef:
        if batch.ref_logp is None:
            raise ValueError("kl_coef needs ref_logp in the batch")
        log_ratio = batch.ref_logp - logp
        per_token = per_token + spec.kl_coef * (torch.exp(log_ratio) - log_ratio - 1)
    summed = (per_token * mask).sum(-1)
    spec = spec if spec.token_count else spec.for_batch(batch)
    if spec.aggregation == "token-mean":
        return summed / spec.token_count
    if spec.aggregation == "seq-mean-token-mean":
        return summed / mask.sum(-1).clamp(min=1) / spec.seq_count
    return summed / spec.seq_count


def token_values(value_head: nn.Module, hidden: Tensor) -> Tensor:
    """``[B, T]``: the value of the state that predicts token ``t`` (aligned with
    :func:`logp_from_logits`: position 0, which nothing predicts, is 0), from the last
    hidden states ``[B, T, H]``."""
    v = value_head(hidden.float()).squeeze(-1)
    return torch.cat([torch.zeros_like(v[:, :1]), v[:, :-1]], dim=1)


def value_losses(values: Tensor, batch: SequenceBatch, spec: PolicyLoss) -> Tensor:
    """``[B]``: each record's share of the clipped value loss (unweighted by ``vf_coef``);
    the denominator is the batch's response tokens, as for ``token-mean``.

    Raises:
        ValueError: the batch carries no ``old_values`` or ``returns``.
    """
    if batch.old_values is None or batch.returns is None:
        raise ValueError("a value loss needs old_values and returns in the batch")
    spec = spec if spec.token_count else spec.for_batch(batch)
    mask = batch.response_mask.float()
    old = batch.old_values
    clipped = old + (values - old).clamp(-spec.vf_clip, spec.vf_clip)
    err = torch.maximum((values - batch.returns) ** 2, (clipped - batch.returns) ** 2)
    return 0.5 * (err * mask).sum(-1) / spec.token_count


def record_losses(model: Callable[..., Any], batch: SequenceBatch, spec: PolicyLoss,
                  value_head: nn.Module | None = None) -> Tensor:
    """``[B]``: each record's whole share of the update's loss: the policy loss
    (:func:`sequence_losses`) plus ``vf_coef`` x its value loss when ``spec`` has one.

    Raises:
        ValueError: ``spec.vf_coef > 0`` without a ``value_head``.
    """
    if not spec.vf_coef:
        return sequence_losses(token_logp(model, batch), batch, spec)
    if value_head is None:
        raise ValueError("vf_coef > 0 needs the value head the update trains")
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                position_ids=position_ids(batch.attention_mask), output_hidden_states=True)
    logp = logp_from_logits(out.logits, batch.input_ids)
    values = token_values(value_head, out.hidden_states[-1])
    return sequence_losses(logp, batch, spec) + spec.vf_coef * value_losses(values, batch, spec)


def target_weights(kind: str, batch: SequenceBatch, values: Tensor,
                   group_size: int | None = None) -> Tensor:
    """Per-token weights ``c_jt`` of the target ``f = sum c_jt log pi(y_jt)``, ``[B, T]``.

    Args:
        kind: ``seq-return`` (``values`` = each validation response's last-token advantage:
            the paper's f^seq), ``reward`` (``values`` = raw rewards) or ``grpo`` (``values``
            = rewards, made group-relative: minus the group mean, over the group std).
        batch: the validation responses (fresh samples from pi_k).
        values: ``[B]``.
        group_size: responses per prompt, consecutive rows (``grpo`` only).
    """
    values = values.float()
    if kind == "grpo":
        if not group_size or len(values) % group_size:
            raise ValueError(f"grpo target needs group_size dividing {len(values)} rows, "
                             f"got {group_size}")
        g = values.view(-1, group_size)
        values = ((g - g.mean(1, keepdim=True)) / (g.std(1, keepdim=True) + 1e-6)).view(-1)
    elif kind not in ("seq-return", "reward"):
        raise ValueError(f"unknown sequence target {kind!r}; accepted: seq-return, reward, grpo")
    return batch.response_mask.float() * values[:, None] / len(values)


def parameter_set(model: nn.Module, names: Iterable[str] | str = "lora") -> dict[str, Tensor]:
    """The parameters scores live in: ``"lora"`` (every ``lora_A``/``lora_B`` weight),
    ``"trainable"`` (``requires_grad``) or explicit names.

    Raises:
        ValueError: nothing matched, or an unknown name.
    """
    params = dict(model.named_parameters())
    if names == "lora":
        chosen = {n: p for n, p in params.items() if ".lora_A." in n or ".lora_B." in n}
    elif names == "trainable":
        chosen = {n: p for n, p in params.items() if p.requires_grad}
    else:
        names = list(names)
        unknown = [n for n in names if n not in params]
        if unknown:
            raise ValueError(f"unknown parameters {unknown[:3]}; the model has e.g. "
                             f"{list(params)[:3]}")
        chosen = {n: params[n] for n in names}
    if not chosen:
        raise ValueError(f"parameter set {names!r} matched nothing")
    return chosen


def target_gradient(model: nn.Module, params: Mapping[str, Tensor], batch: SequenceBatch,
                    weights: Tensor) -> dict[str, Tensor]:
    """``grad f`` over ``params``: one ordinary backward of the weighted log-likelihood."""
    f = (token_logp(model, batch) * weights).sum()
    grads = torch.autograd.grad(f, list(params.values()))
    return {n: g.detach() for n, g in zip(params, grads, strict=True)}


def scores_bruteforce(model: nn.Module, params: Mapping[str, Tensor], batch: SequenceBatch,
                      spec: PolicyLoss, target: Mapping[str, Tensor],
                      value_head: nn.Module | None = None) -> Tensor:
    """The oracle: each record's own gradient, from its own unpadded forward pass."""
    spec = spec.for_batch(batch)
    out = []
    for i in range(batch.input_ids.shape[0]):
        one = batch.unpadded(i)
        loss = record_losses(model, one, spec, value_head).sum()
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        dot = sum((g * target[n]).sum() for n, g in zip(params, grads, strict=True)
                  if g is not None)
        out.append(-dot if torch.is_tensor(dot)
                   else torch.tensor(0.0, device=batch.input_ids.device))
    return torch.stack(out).detach()


def scores_jvp(model: nn.Module, params: Mapping[str, Tensor], batch: SequenceBatch,
               spec: PolicyLoss, target: Mapping[str, Tensor],
               value_head: nn.Module | None = None) -> Tensor:
    """All records at once: the directional derivative of ``l(theta)`` along ``grad f``."""
    spec = spec.for_batch(batch)
    names = list(params)

    def losses(*values: Tensor) -> Tensor:
        swapped = dict(zip(names, values, strict=True))

        def call(**kwargs):
            return functional_call(model, swapped, args=(), kwargs=kwargs, strict=False)

        return record_losses(call, batch, spec, value_head)

    primals = tuple(params[n].detach() for n in names)
    tangents = tuple(target[n] for n in names)
    _, directional = jvp(losses, primals, tangents)
    return -directional.detach()


def _linear_owners(model: nn.Module, params: Mapping[str, Tensor]) -> dict[str, tuple]:
    """For each parameter, the ``nn.Linear`` holding it and whether it is weight or bias."""
    owners = {}
    for name in params:
        module_name, _, leaf = name.rpartition(".")
        module = model.get_submodule(module_name)
        if not isinstance(module, nn.Linear) or leaf not in ("weight", "bias"):
            raise ValueError(f"ghost scores need parameters of nn.Linear layers; {name!r} is "
                             f"a {leaf} of {type(module).__name__} (use scores_jvp)")
        owners[name] = (module_name, module, leaf)
    return owners


def scores_ghost(model: nn.Module, params: Mapping[str, Tensor], batch: SequenceBatch,
                 spec: PolicyLoss, target: Mapping[str, Tensor],
                 value_head: nn.Module | None = None) -> Tensor:
    """All records at once from layer inputs and output gradients (see the module docstring).

    Raises:
        ValueError: a parameter that is not the weight or bias of an ``nn.Linear``.
    """
    spec = spec.for_batch(batch)
    owners = _linear_owners(model, params)
    modules = {mn: mod for mn, mod, _ in owners.values()}
    inputs: dict[str, list[Tensor]] = {mn: [] for mn in modules}
    outputs: dict[str, list[Tensor]] = {mn: [] for mn in modules}

    def hook(module_name):
        def save(_module, args, output):
            inputs[module_name].append(args[0].detach())
            outputs[module_name].append(output)
        return save

    handles = [mod.register_forward_hook(hook(mn)) for mn, mod in modules.items()]
    try:
        total = record_losses(model, batch, spec, value_head).sum()
    finally:
        for h in handles:
            h.remove()
    flat_outputs = [o for mn in modules for o in outputs[mn]]
    deltas = torch.autograd.grad(total, flat_outputs, allow_unused=True)
    delta_by_module, k = {}, 0
    for mn in modules:
        n = len(outputs[mn])
        delta_by_module[mn] = deltas[k:k + n]
        k += n
    scores = torch.zeros(batch.input_ids.shape[0], dtype=torch.float64,
                         device=batch.input_ids.device)
    for name, (mn, _, leaf) in owners.items():
        g = target[name].to(torch.float64)
        for x, d in zip(inputs[mn], delta_by_module[mn], strict=True):
            if d is None:
                continue
            d = d.to(torch.float64)
            if leaf == "weight":
                contrib = (d * (x.to(torch.float64) @ g.T)).sum(-1)
            else:
                contrib = (d * g).sum(-1)
            scores -= contrib.reshape(contrib.shape[0], -1).sum(-1)
    return scores.to(torch.float32)


SCORERS = {"ghost": scores_ghost, "jvp": scores_jvp, "bruteforce": scores_bruteforce}


def sequence_scores(model: nn.Module, params: Mapping[str, Tensor], batch: SequenceBatch,
                    spec: PolicyLoss, target: Mapping[str, Tensor],
                    method: str = "ghost", value_head: nn.Module | None = None) -> Tensor:
    """``I_i`` for every record of ``batch`` (see the module docstring for the methods);
    ``value_head``: the value head on the model's last hidden state, which the records'
    value loss needs when ``spec.vf_coef > 0``.

    Raises:
        ValueError: an unknown method.
    """
    if method not in SCORERS:
        raise ValueError(f"unknown scoring method {method!r}; accepted: {list(SCORERS)}")
    if not math.isfinite(float(sum(float(t.abs().sum()) for t in target.values()))):
        raise ValueError("the target gradient is not finite")
    return SCORERS[method](model, params, batch, spec, target, value_head)
