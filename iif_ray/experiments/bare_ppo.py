"""PPO as a bare torch loop: the floor a PPO round is timed against.

Everything one round of the paper's PPO must do, and nothing else: step ``num_envs``
gymnasium environments in lock step (``SyncVectorEnv``, as Stable-Baselines3's
``DummyVecEnv``), sample actions from a categorical policy, compute GAE(lambda) advantages,
then ``num_epochs`` passes of shuffled minibatches of the clipped-surrogate loss. The
networks and hyperparameters are the preset's, as in our PPO and in SB3: separate 64-64 tanh
actor and critic with orthogonal init, minibatch standardised advantages, no gradient
clipping. No logging, no episode objects, no connectors: a framework's round costs this plus
its overhead, so ``ours / bare`` measures that overhead.

Read it as the reference of what a round is; it is not a training entry point (no
checkpoints, no evaluation), and it covers discrete actions and flat observations (the
presets ``iif-ray bench sb3`` times).
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from iif_ray.envs import make_env
from iif_ray.presets import Preset


def mlp(n_in: int, hiddens: list[int], n_out: int, out_gain: float) -> nn.Sequential:
    """Tanh MLP; hidden layers orthogonal with gain sqrt(2), output with ``out_gain``."""
    layers: list[nn.Module] = []
    for h in hiddens:
        layers += [nn.Linear(n_in, h), nn.Tanh()]
        n_in = h
    layers.append(nn.Linear(n_in, n_out))
    for i, m in enumerate(x for x in layers if isinstance(x, nn.Linear)):
        gain = out_gain if i == len(hiddens) else math.sqrt(2.0)
        nn.init.orthogonal_(m.weight, gain=gain)
        nn.init.zeros_(m.bias)
    return nn.Sequential(*layers)


class BarePPO:
    """One preset's PPO: ``round()`` samples ``steps_per_round`` steps and updates.

    Raises:
        ValueError: a CNN preset or a non-discrete action space.
    """

    def __init__(self, preset: Preset, seed: int = 0, num_envs: int = 1) -> None:
        if "conv_filters" in preset.model:
            raise ValueError(f"preset {preset.name!r} uses a CNN; the bare loop covers MLPs")
        self.p = preset
        self.envs = gym.vector.SyncVectorEnv(
            [lambda: make_env(preset.env_id, {"kwargs": preset.env_kwargs})] * num_envs,
            autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
        space = self.envs.single_action_space
        if not isinstance(space, gym.spaces.Discrete):
            raise ValueError(f"the bare loop needs discrete actions, got {space}")
        torch.manual_seed(seed)
        obs_dim = int(np.prod(self.envs.single_observation_space.shape))
        hiddens = list(preset.model["fcnet_hiddens"])
        self.pi = mlp(obs_dim, hiddens, int(space.n), out_gain=0.01)
        self.vf = mlp(obs_dim, hiddens, 1, out_gain=1.0)
        params = [*self.pi.parameters(), *self.vf.parameters()]
        self.opt = (torch.optim.SGD(params, lr=preset.lr) if preset.optimizer == "sgd"
                    else torch.optim.Adam(params, lr=preset.lr))
        self.num_envs = num_envs
        self.n_steps = preset.steps_per_round // num_envs
        self.obs, _ = self.envs.reset(seed=seed)
        self.gen = torch.Generator().manual_seed(seed)

    def values(self, obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.vf(torch.as_tensor(obs, dtype=torch.float32)).squeeze(-1).numpy()

    def collect(self) -> dict[str, torch.Tensor]:
        """``n_steps`` steps of every environment, flattened (time-major), with GAE advantages
        and returns (``dones`` marks each episode's last step)."""
        T, N, p = self.n_steps, self.num_envs, self.p
        obs = np.zeros((T, N, *self.obs.shape[1:]), np.float32)
        actions = np.zeros((T, N), np.int64)
        logp = np.zeros((T, N), np.float32)
        values = np.zeros((T + 1, N), np.float32)
        rewards = np.zeros((T, N), np.float32)
        dones = np.zeros((T, N), np.float32)
        for t in range(T):
            obs[t] = self.obs
            with torch.no_grad():
                o = torch.as_tensor(self.obs, dtype=torch.float32)
                dist = torch.distributions.Categorical(logits=self.pi(o), validate_args=False)
                a = dist.sample()
                logp[t] = dist.log_prob(a).numpy()
                values[t] = self.vf(o).squeeze(-1).numpy()
            actions[t] = a.numpy()
            self.obs, r, term, trunc, info = self.envs.step(actions[t])
            rewards[t] = r
            dones[t] = term | trunc
            cut = np.flatnonzero(trunc & ~term)
            if len(cut):  # a time limit is not an end: bootstrap from the last observation
                rewards[t, cut] += p.gamma * self.values(np.stack(info["final_obs"][cut]))
        values[T] = self.values(self.obs)
        adv = np.zeros((T, N), np.float32)
        last = np.zeros(N, np.float32)
        for t in reversed(range(T)):
            live = 1.0 - dones[t]
            delta = rewards[t] + p.gamma * values[t + 1] * live - values[t]
            last = delta + p.gamma * p.lambda_ * live * last
            adv[t] = last
        flat = {"obs": obs, "actions": actions, "logp": logp, "adv": adv,
                "returns": adv + values[:T], "dones": dones}
        return {k: torch.as_tensor(v.reshape(T * N, *v.shape[2:])) for k, v in flat.items()}

    def update(self, b: dict[str, torch.Tensor]) -> None:
        """``num_epochs`` shuffled passes of minibatch PPO steps."""
        p, n = self.p, len(b["obs"])
        for _ in range(p.num_epochs):
            perm = torch.randperm(n, generator=self.gen)
            for start in range(0, n, p.minibatch_size):
                i = perm[start:start + p.minibatch_size]
                adv = b["adv"][i]
                if len(adv) > 1:
                    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                dist = torch.distributions.Categorical(logits=self.pi(b["obs"][i]),
                                                       validate_args=False)
                ratio = torch.exp(dist.log_prob(b["actions"][i]) - b["logp"][i])
                clipped = torch.clamp(ratio, 1 - p.clip_param, 1 + p.clip_param)
                policy_loss = -torch.min(adv * ratio, adv * clipped).mean()
                vf_loss = ((self.vf(b["obs"][i]).squeeze(-1) - b["returns"][i]) ** 2).mean()
                loss = (policy_loss + p.vf_loss_coeff * vf_loss
                        - p.entropy_coeff * dist.entropy().mean())
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()

    def round(self) -> None:
        """One PPO round: sample, then update."""
        self.update(self.collect())

    def close(self) -> None:
        self.envs.close()
