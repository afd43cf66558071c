"""The paper's PPO learner: its advantage scope, optimiser, and speed patches give RLlib's
results (compared step by step against RLlib's own learner)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.core.columns import Columns
from ray.rllib.utils.metrics import DIFF_NUM_GRAD_UPDATES_VS_SAMPLER_POLICY as OFF_POLICYNESS

from iif_ray.rllib import IIFConfig
from iif_ray.rllib.ppo_learner import PaperPPOTorchLearner
from tests.rllib.test_iif_learner import RecordingLearner, build, make_config, update


class RLlibBookkeepingLearner(RecordingLearner):
    """Keeps the all-ones loss mask and RLlib's per-minibatch off-policyness metric."""

    def run_influence_round(self, module_id, cols, episodes):
        out, metrics = super().run_influence_round(module_id, cols, episodes)
        out[Columns.LOSS_MASK] = torch.ones(len(out[Columns.OBS]), dtype=torch.bool)
        return out, metrics

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


@pytest.mark.parametrize("norm", ["batch", "minibatch"])
def test_advantage_normalization(tmp_path, monkeypatch, norm) -> None:
    """``minibatch`` standardises raw advantages within each minibatch (as SB3 does);
    ``batch`` passes the buffer-standardised advantages through unchanged."""

    from iif_ray.rllib.connectors import ADVANTAGES_RAW

    seen: list[tuple[np.ndarray, np.ndarray]] = []
    original = PaperPPOTorchLearner.ppo_loss  # the PPO loss of the (default) lean loop

    def spy(self, *, module_id, config, batch, fwd_out, log):
        seen.append((batch[Columns.ADVANTAGES].detach().numpy().copy(),
                     batch[ADVANTAGES_RAW].detach().numpy().copy()))
        return original(self, module_id=module_id, config=config, batch=batch, fwd_out=fwd_out,
                        log=log)

    monkeypatch.setattr(PaperPPOTorchLearner, "ppo_loss", spy)
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
        ours = two_steps(PaperPPOTorchLearner.apply_gradients, grads)
        theirs = two_steps(TorchLearner.apply_gradients, grads)
        assert all(torch.isfinite(p).all() for p in ours)
        for a, b in zip(ours, theirs, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    moved = two_steps(PaperPPOTorchLearner.apply_gradients, finite)
    learner.set_state(copy.deepcopy(start))
    assert any(not torch.equal(a, b) for a, b in zip(moved, learner._params.values(), strict=True))


@pytest.mark.parametrize("spec", [{"type": "sgd", "momentum": 0.9}, {"type": "adam", "eps": 1e-5}])
def test_multi_tensor_step_gives_the_single_tensor_floats(spec) -> None:
    """make_optimizer's multi-tensor step (torch's GPU default, chosen on CPU too) moves
    the parameters exactly as torch's per-tensor loop does."""
    from iif_ray.rllib.ppo_learner import make_optimizer

    def run(foreach: bool) -> list[torch.Tensor]:
        torch.manual_seed(0)
        params = [torch.randn(s, requires_grad=True) for s in ((16, 4), (16,), (3, 16), (3,))]
        opt = make_optimizer(params, {**spec, "foreach": foreach} if not foreach else spec)
        assert opt.defaults["foreach"] is foreach
        g = torch.Generator().manual_seed(1)
        for _ in range(20):
            for p in params:
                p.grad = torch.randn(p.shape, generator=g)
            opt.step()
        return params

    for a, b in zip(run(True), run(False), strict=True):
        assert torch.equal(a, b)
