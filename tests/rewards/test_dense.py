"""The endogenous reward as a GRPO reward: per-token advantages (dense and sparse) and their rows."""

import numpy as np
import pytest

from jaxalign.rewards.dense import token_advantages, with_token_advantages
from jaxalign.rl.grpo import group_advantages, policy_loss


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


def test_token_advantage_rows_feed_the_grpo_loss():
    """Sparse per-token advantages in GRPO rows give exactly the loss of per-trajectory advantages."""
    prompts, responses = [3, 2], [4, 5]
    t = 10
    rows = {"input_ids": np.zeros((2, t), np.int32), "target_mask": np.zeros((2, t), np.int32),
            "advantages": np.zeros((2,), np.float32)}
    for i, (p, n) in enumerate(zip(prompts, responses)):
        rows["target_mask"][i, p - 1:p - 1 + n] = 1
    per_traj = np.array([0.7, -1.3], np.float32)
    out = with_token_advantages(rows, prompts, [np.full(n, a) for n, a in zip(responses, per_traj)])
    assert out["advantages"].shape == (2, t) and rows["advantages"].shape == (2,)
    np.testing.assert_array_equal(out["advantages"] != 0, rows["target_mask"] == 1)
    rng = np.random.default_rng(1)
    logp, old = rng.normal(size=(2, t)) * 0.1 - 1, rng.normal(size=(2, t)) * 0.1 - 1
    by_token, _ = policy_loss(logp, old, out["advantages"], rows["target_mask"])
    by_traj, _ = policy_loss(logp, old, per_traj, rows["target_mask"])
    np.testing.assert_allclose(float(by_token), float(by_traj), rtol=1e-6)
    with pytest.raises(ValueError, match="fit"):
        with_token_advantages(rows, [8], [np.ones(5)])
