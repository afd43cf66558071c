"""Target functions: the quantity whose change an influence score predicts.

A target is any callable ``(policy: PolicyView, batch: Mapping[str, Tensor]) -> scalar``. It
must reach the policy only through the view (``logp``, ``entropy``, ``dist_inputs``), which is
what makes it differentiable with respect to the policy parameters. ``batch`` holds the real
rows of the round's buffer: ``obs``, ``actions``, ``advantages_raw``, ``advantages`` and
``logp_old``.

Register a new target with :func:`register_target`; the name then works everywhere a target
is named (config, CLI, Tune sweeps).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from iif_ray.attribution.policy import FunctionalPolicy, ParamDict, PolicyView


class Target(Protocol):
    def __call__(self, policy: PolicyView, batch: Mapping[str, Tensor]) -> Tensor: ...


def return_target(policy: PolicyView, batch: Mapping[str, Tensor]) -> Tensor:
    """Policy-gradient surrogate of the return, ``mean_j A_j log pi(a_j|s_j)``.

    The buffer doubles as validation set (it was sampled by the pre-update policy), and the
    advantages are the raw GAE estimates, as in the paper's ``f_return``.
    """
    logp = policy.logp(batch["obs"], batch["actions"])
    return (batch["advantages_raw"].to(logp.dtype) * logp).mean()


@dataclass
class ActionTarget:
    """Mean log-probability of chosen actions at chosen states (``f_action``).

    Either a fixed probe set (``probe_obs``/``probe_actions``), or a selector over the buffer:
    with ``action`` set and no probe states, the probes are this round's records whose action
    equals ``action`` ("states where the agent chose X"), capped at ``max_probes``.
    """

    probe_obs: Tensor | None = None
    probe_actions: Tensor | None = None
    action: int | None = None
    max_probes: int | None = None

    def __post_init__(self) -> None:
        if self.probe_obs is None and self.action is None:
            raise ValueError("action target needs probe states (probe_file) or an action selector")
        if self.probe_obs is not None and self.probe_actions is None:
            if self.action is None:
                raise ValueError("action target: probe states given without probe actions")
            self.probe_actions = torch.full((len(self.probe_obs),), int(self.action))

    def probes(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        if self.probe_obs is not None:
            obs = self.probe_obs.to(batch["obs"].device, batch["obs"].dtype)
            return obs, self.probe_actions.to(batch["actions"].device)
        sel = (batch["actions"] == self.action).nonzero().flatten()
        if self.max_probes is not None:
            sel = sel[: self.max_probes]
        return batch["obs"][sel], batch["actions"][sel]

    def __call__(self, policy: PolicyView, batch: Mapping[str, Tensor]) -> Tensor:
        obs, actions = self.probes(batch)
        if len(actions) == 0:
            # No probe state this round: the target is constant, every score is 0.
            return policy.logp(batch["obs"][:1], batch["actions"][:1]).sum() * 0.0
        return policy.logp(obs, actions).mean()

    @classmethod
    def from_file(cls, path: str | Path, action: int | None = None) -> ActionTarget:
        """Load probes from ``.npz`` (arrays ``obs`` and ``actions``) or Parquet.

        A Parquet probe file has an ``obs`` list column (flattened observations) with the
        shape in the schema metadata key ``obs_shape`` (as the ledger writes it), and an
        ``action`` column.
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"probe file {str(path)!r} does not exist")
        if path.suffix == ".npz":
            data = np.load(path)
            obs = data["obs"]
            actions = data.get("actions")
        elif path.suffix == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            meta = table.schema.metadata or {}
            shape = tuple(int(s) for s in meta.get(b"obs_shape", b"-1").decode().split(",") if s)
            obs = np.stack(table.column("obs").to_numpy(zero_copy_only=False)).reshape(
                (table.num_rows, *shape)
            )
            actions = table.column("action").to_numpy() if "action" in table.column_names else None
        else:
            raise ValueError(f"probe file {str(path)!r}: expected .npz or .parquet")
        return cls(
            probe_obs=torch.as_tensor(np.asarray(obs, dtype=np.float32)),
            probe_actions=None if actions is None else torch.as_tensor(np.array(actions)),
            action=action,
        )


TargetFactory = Callable[..., Target]
TARGETS: dict[str, TargetFactory] = {}


def register_target(name: str, factory: TargetFactory) -> None:
    """Make ``name`` usable as ``target=`` everywhere (config, CLI, Tune).

    Args:
        name: the target's name; registering an existing name replaces it.
        factory: called as ``factory(**target_options)``; returns the target, a function
            ``(policy view, batch) -> scalar`` to increase.
    """
    TARGETS[name] = factory


def _action_factory(probe_file: str | None = None, action: int | None = None,
                    max_probes: int | None = None) -> ActionTarget:
    if probe_file is not None:
        return ActionTarget.from_file(probe_file, action=action)
    return ActionTarget(action=action, max_probes=max_probes)


register_target("return", lambda: return_target)
register_target("action", _action_factory)


def make_target(name: str, options: Mapping[str, Any] | None = None) -> Target:
    """Build the registered target ``name`` with ``options``.

    Raises:
        ValueError: no target of that name is registered.
        TypeError: the options do not fit the target's factory.
    """
    if name not in TARGETS:
        raise ValueError(f"unknown target {name!r}; registered targets: {sorted(TARGETS)}")
    return TARGETS[name](**dict(options or {}))


def target_gradient(
    policy: FunctionalPolicy, target: Target, batch: Mapping[str, Tensor]
) -> tuple[Tensor, ParamDict]:
    """Value and gradient of the target over the policy parameters, at the current point.

    Returns:
        ``(f(theta_k), grad f(theta_k))``, the gradient as a parameter-name -> tensor dict:
        the direction every record's score is an inner product with.
    """
    params = policy.params()

    def f(p: ParamDict) -> Tensor:
        return target(policy.bind(p), batch)

    grads, value = torch.func.grad_and_value(f)(params)
    return value.detach(), {k: g.detach() for k, g in grads.items()}
