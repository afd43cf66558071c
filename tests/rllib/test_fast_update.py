"""The lean PPO update loop gives RLlib's stock update: same minibatches in the same order,
same weights, same metrics, same IIF scores and keep decisions.

The stock side is RLlib's own ``Learner.update`` with ``MiniBatchCyclicIterator`` and RLlib's
``PPOTorchLearner.compute_loss_for_module`` (``fast_update=False``). Both sides draw their
per-epoch shuffles from NumPy's global stream, seeded identically, so the same minibatch
order is not arranged by a test hook: it is what the lean loop must reproduce. Weights are
compared with a tolerance of 1e-6 (absolute and relative); on one machine they come out
bit-identical, because the lean loss performs RLlib's floating-point operations in RLlib's
order.
"""

from __future__ import annotations

import copy
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from ray.rllib.core import COMPONENT_RL_MODULE
from ray.rllib.core.distribution.torch.torch_distribution import TorchCategorical
from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
from ray.rllib.utils.metrics.metrics_logger import MetricsLogger
from ray.rllib.utils.minibatch_utils import MiniBatchCyclicIterator

from iif_ray.ledger import read_ledger
from iif_ray.rllib import IIFConfig
from iif_ray.rllib.minibatches import CyclicMinibatches
from iif_ray.rllib.ppo_learner import LeanCategorical, PaperPPOTorchLearner, _gather
from tests.rllib.test_iif_learner import N_STEPS, RecordingLearner, make_config

TOL = 1e-6


# ---- the minibatch plan against RLlib's iterator
def rllib_plan(num_rows: dict[str, int], size: int, epochs: int, shuffle: bool,
               total: int = 0) -> list[dict[str, np.ndarray]]:
    """Row ids of every minibatch RLlib's iterator yields (a row-id column rides along)."""
    batch = MultiAgentBatch({m: SampleBatch({"row": np.arange(n)}) for m, n in num_rows.items()},
                            env_steps=max(num_rows.values()))
    it = MiniBatchCyclicIterator(batch, num_epochs=epochs, minibatch_size=size,
                                 shuffle_batch_per_epoch=shuffle, num_total_minibatches=total)
    return [{m: np.asarray(b["row"]) for m, b in mb.policy_batches.items()} for mb in it]


@pytest.mark.parametrize(("num_rows", "size", "epochs", "total"), [
    ({"a": 256}, 64, 3, 0),            # an exact multiple: the walk wraps on the last row
    ({"a": 229}, 64, 4, 0),            # IIF drops rows: minibatches straddle epochs
    ({"a": 50}, 64, 2, 0),             # a minibatch larger than the batch
    ({"a": 100, "b": 37}, 16, 2, 0),   # modules of different sizes
    ({"a": 100}, 32, 1, 7),            # a fixed minibatch count (multi-learner option)
])
@pytest.mark.parametrize("shuffle", [True, False])
def test_minibatch_plan_is_rllibs(num_rows, size, epochs, total, shuffle) -> None:
    np.random.seed(3)
    theirs = rllib_plan(num_rows, size, epochs, shuffle, total)
    after_theirs = np.random.random()
    np.random.seed(3)
    ours = list(CyclicMinibatches(num_rows, minibatch_size=size, num_epochs=epochs,
                                  shuffle=shuffle, num_total_minibatches=total))
    assert np.random.random() == after_theirs  # the same draws from NumPy's global stream
    assert len(ours) == len(theirs) > 0
    for o, t in zip(ours, theirs, strict=True):
        assert o.keys() == t.keys()
        for m in o:
            np.testing.assert_array_equal(o[m], t[m])


def test_minibatch_plan_refuses_empty_batches() -> None:
    with pytest.raises(ValueError, match=r"module\(s\) \['b'\] is empty"):
        CyclicMinibatches({"a": 3, "b": 0}, minibatch_size=2, num_epochs=1, shuffle=False)


def test_gather_takes_rows_of_nested_columns() -> None:
    """Dict observations (and arrays, lists) are gathered row by row like flat tensors."""
    cols = {"obs": {"pos": torch.arange(10.0).view(5, 2), "id": torch.arange(5)},
            "actions": torch.arange(5) * 10, "weights": np.arange(5.0), "infos": list("abcde")}
    out = _gather(cols, np.array([4, 0, 0]))
    torch.testing.assert_close(out["obs"]["pos"], torch.tensor([[8.0, 9.0], [0, 1], [0, 1]]))
    torch.testing.assert_close(out["obs"]["id"], torch.tensor([4, 0, 0]))
    torch.testing.assert_close(out["actions"], torch.tensor([40, 0, 0]))
    np.testing.assert_array_equal(out["weights"], [4.0, 0.0, 0.0])
    assert out["infos"] == ["e", "a", "a"]


# ---- whole updates against RLlib's stock update
def build_pair(cfg: IIFConfig, env_id: str):
    """A learner and N_STEPS of episodes sampled by its policy."""
    learner = cfg.build_learner(env=gym.make(env_id))
    runner = SingleAgentEnvRunner(config=cfg)
    runner.set_state(learner.get_state(components=COMPONENT_RL_MODULE))
    return learner, runner.sample(num_timesteps=N_STEPS, random_actions=False)


def run_rounds(cfg: IIFConfig, env_id: str, episodes=None, start=None, rounds: int = 2):
    learner, sampled = build_pair(cfg, env_id)
    episodes = episodes or sampled
    if start is not None:
        learner.set_state(copy.deepcopy(start))
    start = copy.deepcopy(learner.get_state())
    results = []
    for k in range(rounds):
        np.random.seed(100 + k)  # the per-epoch shuffles of both loops
        out = learner.update(episodes=copy.deepcopy(episodes), num_epochs=3, minibatch_size=64,
                             shuffle_batch_per_epoch=True,
                             timesteps={"num_env_steps_sampled_lifetime": N_STEPS * (k + 1)})
        results.append(MetricsLogger.peek_results(out))
    params = {k: p.detach().clone() for k, p in learner.module["default_policy"].named_parameters()}
    return learner, params, results, episodes, start


def flat(d: dict, prefix: str = "") -> dict[str, float]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out


# Seconds and throughputs differ between any two runs; everything else must match.
TIMING = ("_s", "throughput", "records_per_s", "timers", "learner_connector")


@pytest.mark.parametrize(("mode", "norm", "entropy", "vf_clip"), [
    ("off", "minibatch", 0.0, math.inf), ("filter", "minibatch", 0.0, math.inf),
    ("filter", "batch", 0.0, math.inf),
    ("off", "minibatch", 0.01, 0.5),  # the entropy term and the value clip in the graph
])
def test_lean_update_gives_rllibs_weights_metrics_and_scores(tmp_path, mode, norm, entropy,
                                                             vf_clip) -> None:
    """PPO (mode off) and IIF: two rounds, three epochs of minibatch 64, from the same
    weights and episodes, once through the lean loop and once through RLlib's."""
    def cfg(name: str, fast: bool) -> IIFConfig:
        return (make_config(str(tmp_path / name), mode=mode, drop_fraction=0.25)
                .training(advantage_normalization=norm, fast_update=fast, optimizer="adam",
                          lr=3e-3, entropy_coeff=entropy, vf_clip_param=vf_clip))

    lean, lean_w, lean_res, episodes, start = run_rounds(cfg("lean", True), "CartPole-v1")
    stock, stock_w, stock_res, *_ = run_rounds(cfg("stock", False), "CartPole-v1",
                                               episodes, start)
    assert isinstance(lean, RecordingLearner)
    assert lean.direct_step_unsupported(["default_policy"]) is None  # the inlined step ran
    # The same minibatches, in the same order.
    assert len(lean.seen) == len(stock.seen) > 8
    for a, b in zip(lean.seen, stock.seen, strict=True):
        np.testing.assert_array_equal(a, b)
    # The same weights; and they moved.
    for k in lean_w:
        torch.testing.assert_close(lean_w[k], stock_w[k], rtol=TOL, atol=TOL, msg=k)
    assert any(not torch.equal(lean_w[k], torch.as_tensor(v)) for k, v in
               start["rl_module"]["default_policy"].items() if k in lean_w)
    # The same result keys and values (timings aside), round by round.
    for o, t in zip(lean_res, stock_res, strict=True):
        o, t = flat(o), flat(t)
        assert sorted(o) == sorted(t)
        for key in o:
            if not any(s in key for s in TIMING):
                assert o[key] == pytest.approx(t[key], rel=TOL, abs=TOL, nan_ok=True), key
    # The same IIF scores and keep decisions in both rounds (round 2 scores the weights
    # round 1 trained).
    lean_ledger, stock_ledger = read_ledger(str(tmp_path / "lean")), read_ledger(
        str(tmp_path / "stock"))
    np.testing.assert_array_equal(lean_ledger.column("kept").to_numpy(zero_copy_only=False),
                                  stock_ledger.column("kept").to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(lean_ledger.column("score").to_numpy(),
                               stock_ledger.column("score").to_numpy(), rtol=TOL, atol=TOL)
    if mode == "filter":
        assert not lean_ledger.column("kept").to_numpy(zero_copy_only=False).all()


def test_lean_update_with_continuous_actions(tmp_path) -> None:
    """Continuous actions (Pendulum, a diagonal Gaussian) take the lean loop too."""
    def cfg(name: str, fast: bool) -> IIFConfig:
        return (IIFConfig().environment("Pendulum-v1").env_runners(num_env_runners=0)
                .training(train_batch_size_per_learner=N_STEPS, minibatch_size=64,
                          num_epochs=3, fast_update=fast, lr=1e-3, use_kl_loss=True,
                          kl_coeff=0.2, grad_clip=None)
                .rl_module(model_config={"fcnet_hiddens": [16, 16], "vf_share_layers": False})
                .attribution(mode="off", ledger_dir=str(tmp_path / name))
                .debugging(seed=0))

    _, lean_w, lean_res, episodes, start = run_rounds(cfg("lean", True), "Pendulum-v1")
    _, stock_w, stock_res, *_ = run_rounds(cfg("stock", False), "Pendulum-v1", episodes, start)
    for k in lean_w:
        torch.testing.assert_close(lean_w[k], stock_w[k], rtol=TOL, atol=TOL, msg=k)
    for key in ("mean_kl_loss", "curr_kl_coeff", "policy_loss", "vf_explained_var"):
        assert lean_res[-1]["default_policy"][key] == pytest.approx(
            stock_res[-1]["default_policy"][key], rel=TOL, abs=TOL), key


def test_minibatch_metrics_flag_logs_every_minibatch(tmp_path, monkeypatch) -> None:
    """By default the loss terms are logged once per round; the flag logs each minibatch."""
    calls = []

    def count(cfg: IIFConfig) -> int:
        learner, episodes = build_pair(cfg, "CartPole-v1")
        original = learner.metrics.log_dict

        def spy(stats, *, key=None, **kw):
            if key == "default_policy" and "policy_loss" in stats:
                calls.append(key)
            return original(stats, key=key, **kw)

        monkeypatch.setattr(learner.metrics, "log_dict", spy)
        calls.clear()
        learner.update(episodes=episodes, num_epochs=2, minibatch_size=64,
                       timesteps={"num_env_steps_sampled_lifetime": N_STEPS})
        return len(calls)

    once = count(make_config(str(tmp_path / "a"), mode="off"))
    every = count(make_config(str(tmp_path / "b"), mode="off").training(minibatch_metrics=True))
    assert once == 1
    assert every == 2 * N_STEPS // 64  # no row dropped: 4 minibatches per epoch


def test_lean_categorical_is_torchs_categorical() -> None:
    """logp, entropy and their gradients: the same floats as RLlib's TorchCategorical."""
    torch.manual_seed(0)
    base = torch.randn(64, 5) * 3
    base[0, 2] = -1e4  # a nearly impossible action
    actions = torch.randint(0, 5, (64,))
    actions[0] = 2
    weights = torch.randn(64)
    out = {}
    for name, make in (("lean", LeanCategorical),
                       ("rllib", TorchCategorical.from_logits)):
        logits = base.clone().requires_grad_()
        dist = make(logits)
        logp, entropy = dist.logp(actions), dist.entropy()
        (weights * logp.exp() - 0.01 * entropy).sum().backward()
        out[name] = (logp.detach(), entropy.detach(), logits.grad)
    for lean, rllib in zip(out["lean"], out["rllib"], strict=True):
        assert torch.equal(lean, rllib)


def test_direct_step_names_what_it_does_not_cover(tmp_path) -> None:
    learner, _ = build_pair(make_config(str(tmp_path / "a"), mode="off"), "CartPole-v1")
    assert learner.direct_step_unsupported(["default_policy"]) is None
    assert learner.direct_step_unsupported(["a", "b"]) == "2 modules"
    clipped, _ = build_pair(make_config(str(tmp_path / "b"), mode="off")
                            .training(grad_clip=0.5), "CartPole-v1")
    assert clipped.direct_step_unsupported(["default_policy"]) == (
        "gradient clipping, scaling or lr schedulers")
    logged, _ = build_pair(make_config(str(tmp_path / "c"), mode="off")
                           .reporting(log_gradients=True), "CartPole-v1")
    assert logged.direct_step_unsupported(["default_policy"]) == "gradient logging"


def test_clipped_gradients_take_rllibs_step_with_the_same_weights(tmp_path) -> None:
    """Gradient clipping runs RLlib's step inside the lean loop: still RLlib's weights."""
    def cfg(name: str, fast: bool) -> IIFConfig:
        return (make_config(str(tmp_path / name), mode="off")
                .training(fast_update=fast, grad_clip=0.05, optimizer="adam", lr=3e-3))

    _, lean_w, _, episodes, start = run_rounds(cfg("lean", True), "CartPole-v1")
    _, stock_w, *_ = run_rounds(cfg("stock", False), "CartPole-v1", episodes, start)
    for k in lean_w:
        torch.testing.assert_close(lean_w[k], stock_w[k], rtol=TOL, atol=TOL, msg=k)


def test_unsupported_updates_fall_back_to_rllibs_loop(tmp_path) -> None:
    learner, _ = build_pair(make_config(str(tmp_path), mode="off"), "CartPole-v1")
    from ray.rllib.core.learner.training_data import TrainingData

    data = TrainingData(episodes=[])
    assert learner.lean_update_unsupported(data, 64) is None
    assert learner.lean_update_unsupported(data, None) == "minibatch_size=None"
    off, _ = build_pair(make_config(str(tmp_path / "off"), mode="off")
                        .training(fast_update=False), "CartPole-v1")
    assert off.lean_update_unsupported(data, 64) == ""


def test_update_options_are_checked() -> None:
    with pytest.raises(ValueError, match="fast must be True or False, got 'yes'"):
        IIFConfig().training(fast_update="yes")


def test_non_finite_gradients_mid_round_take_rllibs_handling(tmp_path, monkeypatch) -> None:
    """A NaN reward makes one minibatch per epoch non-finite. RLlib zeroes such gradients
    and steps; the lean loop's gradient buffer sees it in its one check, hands the step to
    RLlib's handling and builds a new buffer after it: still RLlib's weights."""
    def cfg(name: str, fast: bool) -> IIFConfig:
        return (make_config(str(tmp_path / name), mode="off")
                .training(fast_update=fast, optimizer="adam", lr=3e-3,
                          advantage_normalization="minibatch"))

    _, episodes = build_pair(cfg("sample", True), "CartPole-v1")
    episodes[0].rewards.data[0] = np.nan  # the batch's first row (GAE runs backwards)
    handled = []
    original = PaperPPOTorchLearner.apply_gradients

    def spy(self, grads):
        handled.append(all(torch.isfinite(g).all() for g in grads.values() if g is not None))
        return original(self, grads)

    monkeypatch.setattr(PaperPPOTorchLearner, "apply_gradients", spy)
    _, lean_w, _, _, start = run_rounds(cfg("lean", True), "CartPole-v1", episodes)
    assert handled.count(False) == 2 * 3  # one minibatch per epoch, two rounds of three
    _, stock_w, *_ = run_rounds(cfg("stock", False), "CartPole-v1", episodes, start)
    for k in lean_w:
        assert torch.isfinite(lean_w[k]).all()
        torch.testing.assert_close(lean_w[k], stock_w[k], rtol=TOL, atol=TOL, msg=k)
