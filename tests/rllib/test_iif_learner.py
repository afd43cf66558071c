"""The IIF learner without Ray: the PPO update sees exactly the kept rows."""

from __future__ import annotations

from collections import Counter

import gymnasium as gym
import numpy as np
import pytest
import torch
from ray.rllib.core import COMPONENT_RL_MODULE
from ray.rllib.core.columns import Columns
from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner
from ray.rllib.utils.metrics.metrics_logger import MetricsLogger

from iif_ray.ledger import read_ledger
from iif_ray.rllib import IIFConfig, IIFPPOTorchLearner

N_STEPS = 256


class RecordingLearner(IIFPPOTorchLearner):
    """Remembers the observations of every minibatch the loss is computed on."""

    seen: list[np.ndarray]
    seen_batches: list[set[str]]

    def build(self) -> None:
        super().build()
        self.seen = []
        self.seen_batches = []

    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out):
        self.seen.append(batch[Columns.OBS].detach().cpu().numpy().copy())
        self.seen_batches.append(set(batch))
        return super().compute_loss_for_module(module_id=module_id, config=config, batch=batch,
                                               fwd_out=fwd_out)


def make_config(ledger_dir: str, learner_class: type = RecordingLearner,
                **attribution) -> IIFConfig:
    return (
        IIFConfig()
        .environment("CartPole-v1")
        .env_runners(num_env_runners=0)
        .learners(learner_class=learner_class)
        .training(train_batch_size_per_learner=N_STEPS, minibatch_size=64, num_epochs=2,
                  optimizer="sgd", lr=0.05, use_kl_loss=False, entropy_coeff=0.0,
                  grad_clip=None)
        .rl_module(model_config={"fcnet_hiddens": [16, 16], "vf_share_layers": False})
        .attribution(ledger_dir=ledger_dir, ledger_obs=True, **attribution)
        .debugging(seed=0)
    )


def build(cfg: IIFConfig):
    learner = cfg.build_learner(env=gym.make("CartPole-v1"))
    runner = SingleAgentEnvRunner(config=cfg)
    runner.set_state(learner.get_state(components=COMPONENT_RL_MODULE))
    episodes = runner.sample(num_timesteps=N_STEPS, random_actions=False)
    return learner, episodes


def update(learner, episodes, **kw) -> dict:
    kw.setdefault("num_epochs", 2)
    kw.setdefault("minibatch_size", 64)
    out = learner.update(episodes=episodes, shuffle_batch_per_epoch=True,
                         timesteps={"num_env_steps_sampled_lifetime": N_STEPS}, **kw)
    return MetricsLogger.peek_results(out)["default_policy"]


def rows(obs: np.ndarray) -> list[bytes]:
    return [r.tobytes() for r in np.asarray(obs, dtype=np.float32)]


def ledger_obs(table, mask) -> np.ndarray:
    return np.stack(table.column("obs").to_numpy(zero_copy_only=False))[mask]


def test_update_trains_on_exactly_the_kept_rows(tmp_path) -> None:
    learner, episodes = build(make_config(str(tmp_path), drop_fraction=0.5))
    res = update(learner, episodes)
    table = read_ledger(str(tmp_path))
    kept = table.column("kept").to_numpy(zero_copy_only=False)
    n_kept, n = int(kept.sum()), len(kept)
    assert n == N_STEPS and 0 < n_kept < n  # every real record scored; phantom rows are not
    assert res["iif"]["num_dropped"] == n - n_kept

    trained = Counter(rows(np.concatenate(learner.seen)))
    kept_rows = Counter(rows(ledger_obs(table, kept)))
    dropped_rows = set(rows(ledger_obs(table, ~kept))) - set(kept_rows)
    assert dropped_rows and not dropped_rows & set(trained), "a dropped row reached the loss"
    assert set(trained) == set(kept_rows)
    # RLlib's cyclic iterator covers the kept rows num_epochs times, then fills the last
    # minibatch from the next pass: ceil(E*K/M)*M rows in all.
    expected_total = -(-2 * n_kept // 64) * 64
    assert sum(trained.values()) == expected_total == res["num_module_steps_trained"]
    assert all(trained[r] >= 2 * kept_rows[r] for r in kept_rows)


def test_dropped_rows_do_not_affect_the_gradient(tmp_path) -> None:
    """One SGD step on the filtered batch equals an independent step on the kept rows."""
    cfg = make_config(str(tmp_path), drop_fraction=0.5)
    learner, episodes = build(cfg)
    module = learner.module["default_policy"]
    policy_names = [k for k, _ in module.named_parameters()
                    if not k.startswith(("vf.", "encoder.critic_encoder."))]
    before = {k: p.detach().clone() for k, p in module.named_parameters()}
    update(learner, episodes, num_epochs=1, minibatch_size=None)  # one step, whole batch
    after = {k: p.detach().clone() for k, p in module.named_parameters()}

    table = read_ledger(str(tmp_path))
    kept = table.column("kept").to_numpy(zero_copy_only=False)

    def sgd_step(mask: np.ndarray) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            for k, p in module.named_parameters():
                p.copy_(before[k])
        obs = torch.as_tensor(ledger_obs(table, mask))
        actions = torch.as_tensor(table.column("action").to_numpy()[mask])
        adv = torch.as_tensor(table.column("advantage_std").to_numpy()[mask])
        logits = module.forward_train({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]
        logp = module.get_train_action_dist_cls().from_logits(logits).logp(actions)
        ratio = torch.exp(logp - logp.detach())
        loss = (-ratio * adv).mean()
        params = dict(module.named_parameters())
        grads = torch.autograd.grad(loss, [params[k] for k in policy_names])
        return {k: before[k] - 0.05 * g for k, g in zip(policy_names, grads, strict=True)}

    expected = sgd_step(kept)
    unfiltered = sgd_step(np.ones_like(kept))
    for k in policy_names:
        torch.testing.assert_close(after[k], expected[k], rtol=1e-5, atol=1e-6)
    assert any(not torch.allclose(expected[k], unfiltered[k], atol=1e-6) for k in policy_names)


def test_ppo_mode_is_the_same_path_without_dropping(tmp_path) -> None:
    learner, episodes = build(make_config(str(tmp_path), mode="off"))
    res = update(learner, episodes)
    table = read_ledger(str(tmp_path))
    assert table.num_rows == N_STEPS
    assert table.column("kept").to_numpy(zero_copy_only=False).all()
    assert np.isnan(table.column("score").to_numpy()).all()
    assert res["iif"]["num_dropped"] == 0 and "scoring_s" not in res["iif"]
    trained = set(rows(np.concatenate(learner.seen)))
    assert trained == set(rows(ledger_obs(table, slice(None))))


def test_result_metrics_and_ledger_columns(tmp_path) -> None:
    learner, episodes = build(make_config(str(tmp_path), drop_fraction=0.25))
    res = update(learner, episodes)["iif"]
    for key in ("frac_dropped", "frac_negative", "score_q05", "score_q50", "score_q95",
                "spearman_score_adv", "scoring_s", "update_s", "num_records"):
        assert key in res and np.isfinite(res[key]), key
    table = read_ledger(str(tmp_path))
    assert {"iteration", "env_steps", "episode_id", "t", "action", "reward", "advantage",
            "advantage_std", "score", "kept"} <= set(table.column_names)
    adv_std = table.column("advantage_std").to_numpy()
    # Standardised over real rows only (RLlib's own GAE also counts phantom rows).
    assert abs(adv_std.mean()) < 1e-5 and abs(adv_std.std() - 1) < 1e-3
    score = table.column("score").to_numpy()
    kept = table.column("kept").to_numpy(zero_copy_only=False)
    assert res["frac_negative"] == pytest.approx((score < 0).mean())
    assert res["frac_dropped"] == pytest.approx(1 - kept.mean())
    # Provenance: (episode_id, t) identifies each record exactly once.
    pairs = list(zip(table.column("episode_id").to_pylist(), table.column("t").to_pylist(),
                     strict=True))
    assert len(set(pairs)) == len(pairs)


def test_learner_state_round_trip(tmp_path) -> None:
    learner, episodes = build(make_config(str(tmp_path), selection="random",
                                          drop_fraction=0.5))
    update(learner, episodes)
    state = learner.get_state()
    twin, _ = build(make_config(str(tmp_path / "twin"), selection="random",
                                drop_fraction=0.5))
    twin.set_state(state)
    assert twin.round_index == learner.round_index == 1
    assert twin._select_rng.random() == learner._select_rng.random()
