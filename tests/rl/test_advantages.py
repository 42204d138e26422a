"""GRPO advantages: per-token advantages (dense and sparse) and their place in a GRPOBatch."""

import numpy as np
import pytest

from jaxalign.rl.advantages import group_advantages, token_advantages
from jaxalign.rl.batch import grpo_batch
from jaxalign.rl.grpo import policy_loss
from jaxalign.rollout.types import Trajectory


def test_dense_advantages_hand_computed():
    # One group of two: rewards (1, 2) and (3). Mean 2, unbiased std 1: r~ = (-1, 0), (1).
    adv = token_advantages([np.array([1.0, 2.0]), np.array([3.0])], 2, mode="dense", eps=0.0)
    np.testing.assert_allclose(adv[0], [-1.0, 0.0])  # reward-to-go: -1 + 0, then 0
    np.testing.assert_allclose(adv[1], [1.0])
    adv = token_advantages([np.array([1.0, 2.0, 3.0]), np.array([0.0, 2.0])], 2, mode="dense", std="none")
    np.testing.assert_allclose(adv[0], [(1 - 1.6) + (2 - 1.6) + (3 - 1.6), (2 - 1.6) + (3 - 1.6), 3 - 1.6], rtol=1e-6)
    np.testing.assert_allclose(adv[1], [(0 - 1.6) + (2 - 1.6), 2 - 1.6], rtol=1e-6)


def test_sparse_advantages_are_outcome_grpo_on_every_token():
    rng = np.random.default_rng(0)
    rewards = [rng.normal(size=n) for n in (3, 5, 2, 4, 1, 6)]
    adv = token_advantages(rewards, 3, mode="sparse")
    outcome = np.asarray(group_advantages(np.array([r.sum() for r in rewards]), 3))
    for a, r, o in zip(adv, rewards, outcome):
        assert a.shape == r.shape
        np.testing.assert_allclose(a, o, rtol=1e-5)
    equal = token_advantages([np.array([1.0, 1.0]), np.array([2.0])], 2, mode="sparse")
    assert all(np.all(a == 0) for a in equal)  # equal totals: no signal


def test_bad_groups_are_rejected():
    with pytest.raises(ValueError, match="groups"):
        token_advantages([np.ones(2)] * 3, 2)
    with pytest.raises(ValueError, match="empty"):
        token_advantages([np.ones(2), np.zeros(0)], 2)
    with pytest.raises(ValueError, match="mode"):
        token_advantages([np.ones(2)] * 2, 2, mode="both")


def trajectories(prompts, responses):
    return [Trajectory(prompt_tokens=[1] * p, tokens=[2] * n, loss_mask=[1] * n, logprobs=[0.0] * n)
            for p, n in zip(prompts, responses)]


def test_token_advantage_rows_feed_the_grpo_loss():
    """Sparse per-token advantages in a GRPOBatch give exactly the loss of per-trajectory advantages."""
    prompts, responses = [3, 2], [4, 5]
    t = 16
    target_mask = np.zeros((2, t), np.int32)
    for i, (p, n) in enumerate(zip(prompts, responses)):
        target_mask[i, p - 1:p - 1 + n] = 1  # target-aligned: position p - 1 predicts response token 0
    per_traj = np.array([0.7, -1.3], np.float32)
    trajs = trajectories(prompts, responses)
    out, _ = grpo_batch(trajs, [np.full(n, a) for n, a in zip(responses, per_traj)], rows=2, min_len=t)
    broadcast, _ = grpo_batch(trajs, list(per_traj), rows=2, min_len=t)  # sequence advantages
    assert out.advantages.shape == (2, t)
    np.testing.assert_array_equal(out.target_mask, target_mask)
    np.testing.assert_array_equal(out.advantages != 0, target_mask == 1)
    np.testing.assert_array_equal(out.advantages, broadcast.advantages)
    rng = np.random.default_rng(1)
    logp, old = rng.normal(size=(2, t)) * 0.1 - 1, rng.normal(size=(2, t)) * 0.1 - 1
    by_token, _ = policy_loss(logp, old, out.advantages, target_mask)
    by_traj, _ = policy_loss(logp, old, per_traj, target_mask)
    np.testing.assert_allclose(float(by_token), float(by_traj), rtol=1e-6)
    with pytest.raises(ValueError, match="fit"):
        grpo_batch(trajectories([8], [5]), [np.ones(4)], rows=1, min_len=t)
