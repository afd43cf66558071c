"""The IIF learner without Ray: the PPO update sees exactly the kept rows."""

from __future__ import annotations

import copy
import math
from collections import Counter

import gymnasium as gym
import numpy as np
import pytest
import torch
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.core import COMPONENT_RL_MODULE
from ray.rllib.core.columns import Columns
from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner
from ray.rllib.utils.metrics import DIFF_NUM_GRAD_UPDATES_VS_SAMPLER_POLICY as OFF_POLICYNESS
from ray.rllib.utils.metrics.metrics_logger import MetricsLogger

from iif_ray.algorithm import IIFConfig
from iif_ray.learner import IIFPPOTorchLearner
from iif_ray.ledger import read_ledger

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


def make_config(ledger_dir: str, **attribution) -> IIFConfig:
    return (
        IIFConfig()
        .environment("CartPole-v1")
        .env_runners(num_env_runners=0)
        .learners(learner_class=RecordingLearner)
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


class RLlibBookkeepingLearner(RecordingLearner):
    """Keeps the all-ones loss mask and RLlib's per-minibatch off-policyness metric."""

    def filter_module_batch(self, module_id, cols, episodes):
        out = super().filter_module_batch(module_id, cols, episodes)
        out[Columns.LOSS_MASK] = torch.ones(len(out[Columns.OBS]), dtype=torch.bool)
        return out

    def _compute_off_policyness(self, batch):
        PPOTorchLearner._compute_off_policyness(self, batch)


@pytest.mark.parametrize("norm", ["batch", "minibatch"])
def test_update_shortcuts_give_rllibs_result(tmp_path, norm) -> None:
    """Dropping the all-ones loss mask and logging off-policyness once per update leave the
    trained weights and the logged metrics exactly as RLlib's own bookkeeping does."""
    def run(learner_class, path, episodes=None, start=None):
        cfg = (make_config(str(tmp_path / path), drop_fraction=0.25)
               .learners(learner_class=learner_class)
               .training(advantage_normalization=norm))
        learner, sampled = build(cfg)
        episodes = episodes or copy.deepcopy(sampled)
        if start is not None:
            learner.set_state(start)
        start = copy.deepcopy(learner.get_state())
        results = []
        for _ in range(2):
            np.random.seed(0)  # RLlib's per-epoch shuffle
            results.append(update(learner, copy.deepcopy(episodes)))
        params = [p.detach().clone() for p in learner.module["default_policy"].parameters()]
        return params, results, episodes, learner, start

    ours, ours_res, episodes, learner, start = run(RecordingLearner, "ours")
    assert Columns.LOSS_MASK not in learner.seen_batches[-1]
    theirs, theirs_res, *_ = run(RLlibBookkeepingLearner, "theirs", episodes, start)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert [r[OFF_POLICYNESS] for r in ours_res] == [1.0, 2.0]  # logged in every update
    for o, t in zip(ours_res, theirs_res, strict=True):
        assert o[OFF_POLICYNESS] == t[OFF_POLICYNESS]
        for key in ("policy_loss", "vf_loss", "entropy", "vf_explained_var"):
            assert o[key] == pytest.approx(t[key], rel=1e-6), key


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
    assert twin.iif_iteration == learner.iif_iteration == 1
    assert twin._select_rng.random() == learner._select_rng.random()


@pytest.mark.parametrize("norm", ["batch", "minibatch"])
def test_advantage_normalization(tmp_path, monkeypatch, norm) -> None:
    """``minibatch`` standardises raw advantages within each minibatch (as SB3 does);
    ``batch`` passes the buffer-standardised advantages through unchanged."""
    from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner

    from iif_ray.connectors import ADVANTAGES_RAW

    seen: list[tuple[np.ndarray, np.ndarray]] = []
    original = PPOTorchLearner.compute_loss_for_module

    def spy(self, *, module_id, config, batch, fwd_out):
        seen.append((batch[Columns.ADVANTAGES].detach().numpy().copy(),
                     batch[ADVANTAGES_RAW].detach().numpy().copy()))
        return original(self, module_id=module_id, config=config, batch=batch, fwd_out=fwd_out)

    monkeypatch.setattr(PPOTorchLearner, "compute_loss_for_module", spy)
    cfg = make_config(str(tmp_path), mode="off").training(advantage_normalization=norm)
    learner, episodes = build(cfg)
    update(learner, episodes)
    assert len(seen) >= 8
    raw_all = np.concatenate([r for _, r in seen])
    for adv, raw in seen:
        if norm == "minibatch":
            expected = (raw - raw.mean()) / (raw.std(ddof=1) + 1e-8)
            np.testing.assert_allclose(adv, expected, rtol=1e-4, atol=1e-5)
        else:  # one affine map of the raw advantages, the buffer's, in every minibatch
            slope = np.polyfit(raw, adv, 1)[0]
            assert slope == pytest.approx(1 / np.std(raw_all), rel=0.05)


def test_bad_advantage_normalization_is_refused() -> None:
    with pytest.raises(ValueError, match="advantage_normalization must be one of"):
        IIFConfig().training(advantage_normalization="episode")


def test_forced_keep_replaces_the_selection_for_one_round(tmp_path) -> None:
    """The targeted intervention's hook: the given mask decides what trains, once."""
    learner, episodes = build(make_config(str(tmp_path), drop_fraction=0.5))
    mask = np.arange(N_STEPS) % 3 != 0
    learner.forced_keep = mask
    update(learner, episodes)
    table = read_ledger(str(tmp_path))
    np.testing.assert_array_equal(table.column("kept").to_numpy(zero_copy_only=False), mask)
    assert set(rows(np.concatenate(learner.seen))) == set(rows(ledger_obs(table, mask)))
    assert learner.forced_keep is None


def test_target_value_is_the_target_at_the_current_parameters(tmp_path) -> None:
    """Before the update it is the logged ``target_value``; after it, the same probes'
    mean log-probability under the updated policy."""
    learner, episodes = build(make_config(str(tmp_path), mode="score", target="action",
                                          target_options={"action": 1}))
    before = copy.deepcopy(learner.get_state())
    logged = update(learner, episodes)["iif"]["target_value"]
    batch = learner.last_target_batch
    module = learner.module["default_policy"]
    with torch.no_grad():
        logits = module.forward_train(
            {Columns.OBS: batch["obs"][batch["actions"] == 1]})[Columns.ACTION_DIST_INPUTS]
        expected = torch.log_softmax(logits, -1)[:, 1].mean().item()
    assert learner.target_value() == pytest.approx(expected, rel=1e-5)
    assert expected != pytest.approx(logged, rel=1e-6)  # the update moved it
    learner.set_state(before)
    assert learner.target_value() == pytest.approx(logged, rel=1e-5)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_fused_gradient_guard_steps_like_rllib(tmp_path, optimizer) -> None:
    """One step with our fused nan/inf guard equals RLlib's per-tensor step, for finite
    gradients and for gradients with nan/inf entries (which RLlib zeroes)."""
    from ray.rllib.core.learner.torch.torch_learner import TorchLearner

    cfg = make_config(str(tmp_path), mode="off").training(optimizer=optimizer)
    learner, _ = build(cfg)
    start = copy.deepcopy(learner.get_state())
    gen = torch.Generator().manual_seed(0)
    finite = {pid: torch.randn(p.shape, generator=gen) for pid, p in learner._params.items()}
    broken = dict(finite)
    first, last = next(iter(finite)), list(finite)[-1]
    broken[first] = finite[first].clone().flatten().index_fill(0, torch.tensor([0]), math.nan
                                                               ).view_as(finite[first])
    broken[last] = finite[last].clone().flatten().index_fill(0, torch.tensor([0]), math.inf
                                                             ).view_as(finite[last])

    def two_steps(step, grads) -> list[torch.Tensor]:
        learner.set_state(copy.deepcopy(start))
        for _ in range(2):  # the second step also exercises Adam's moment state
            step(learner, {pid: g.clone() for pid, g in grads.items()})
        return [p.detach().clone() for p in learner._params.values()]

    for grads in (finite, broken):
        ours = two_steps(IIFPPOTorchLearner.apply_gradients, grads)
        theirs = two_steps(TorchLearner.apply_gradients, grads)
        assert all(torch.isfinite(p).all() for p in ours)
        for a, b in zip(ours, theirs, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    moved = two_steps(IIFPPOTorchLearner.apply_gradients, finite)
    learner.set_state(copy.deepcopy(start))
    assert any(not torch.equal(a, b) for a, b in zip(moved, learner._params.values(), strict=True))
