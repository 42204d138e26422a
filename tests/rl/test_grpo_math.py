"""GRPO math against hand-computed values."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxalign.rl.advantages import group_advantages
from jaxalign.rl.grpo import aggregate, kl_penalty, policy_loss


def test_group_advantages_by_hand():
    r = jnp.array([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    a = np.asarray(group_advantages(r, 4, eps=0.0))
    s = math.sqrt(4 * 0.25 / 3)  # unbiased std of {1, 0, 0, 1}
    np.testing.assert_allclose(a, [0.5 / s, -0.5 / s, -0.5 / s, 0.5 / s, 0, 0, 0, 0], rtol=1e-6)
    np.testing.assert_allclose(group_advantages(r, 4, eps=0.0, std="population")[:4], [1, -1, -1, 1], rtol=1e-6)
    np.testing.assert_allclose(group_advantages(r, 4, std="none"), [0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0])
    assert np.all(np.asarray(group_advantages(jnp.ones(4), 4)) == 0)  # all-equal group: no signal
    with pytest.raises(ValueError, match="do not form groups"):
        group_advantages(jnp.ones(6), 4)


def one_token(ratio, adv, **kw):
    logp = jnp.array([[math.log(ratio)]])
    return policy_loss(logp, jnp.zeros((1, 1)), jnp.array([adv]), jnp.ones((1, 1)), **kw)


def test_clip_higher_on_positive_advantage():
    loss, aux = one_token(1.5, 2.0)
    np.testing.assert_allclose(loss, -(1 + 0.28) * 2.0, rtol=1e-6)  # clipped at 1 + eps_high
    assert float(aux["clip_frac"]) == 1.0
    loss, aux = one_token(1.2, 2.0)  # inside the (asymmetric) trust region: no clipping
    np.testing.assert_allclose(loss, -1.2 * 2.0, rtol=1e-6)
    assert float(aux["clip_frac"]) == 0.0
    loss, _ = one_token(1.25, 2.0, eps_high=0.2)  # symmetric clip would have cut it
    np.testing.assert_allclose(loss, -1.2 * 2.0, rtol=1e-6)


def test_negative_advantage_clip_and_dual_clip():
    loss, aux = one_token(0.5, -1.0)  # ratio below 1 - eps_low: the clipped term (0.8 * -1) wins
    np.testing.assert_allclose(loss, 0.8, rtol=1e-6)
    assert float(aux["clip_frac"]) == 1.0 and float(aux["dual_clip_frac"]) == 0.0
    loss, aux = one_token(20.0, -1.0)  # -min(-20, -1.28) = 20, capped at -c * A = 10
    np.testing.assert_allclose(loss, 10.0, rtol=1e-6)
    assert float(aux["dual_clip_frac"]) == 1.0
    loss, _ = one_token(20.0, -1.0, dual_clip=None)
    np.testing.assert_allclose(loss, 20.0, rtol=1e-6)
    loss, _ = one_token(20.0, -1.0, dual_clip=3.0)
    np.testing.assert_allclose(loss, 3.0, rtol=1e-6)


def test_masked_tool_tokens_and_aggregations():
    # seq 0: three policy tokens and a tool token with a wild ratio; seq 1: one policy token.
    ratio = jnp.array([[1.0, 1.0, 50.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    mask = jnp.array([[1, 1, 0, 1], [0, 0, 1, 0]])
    adv = jnp.array([-1.0, -4.0])
    kw = dict(dual_clip=None)
    loss, aux = policy_loss(jnp.log(ratio), jnp.zeros_like(ratio), adv, mask, agg="token-mean", **kw)
    np.testing.assert_allclose(loss, (1 + 1 + 1 + 4) / 4, rtol=1e-6)  # tool token: not in sum nor count
    np.testing.assert_allclose(aux["ratio_mean"], 1.0, rtol=1e-6)
    loss, _ = policy_loss(jnp.log(ratio), jnp.zeros_like(ratio), adv, mask, agg="seq-mean-token-mean", **kw)
    np.testing.assert_allclose(loss, (1.0 + 4.0) / 2, rtol=1e-6)
    loss, _ = policy_loss(jnp.log(ratio), jnp.zeros_like(ratio), adv, mask, agg="seq-sum-norm", norm_len=8, **kw)
    np.testing.assert_allclose(loss, 7.0 / (2 * 8), rtol=1e-6)
    # per-token advantages [B, T] give the same as broadcasting [B]
    loss_bt, _ = policy_loss(jnp.log(ratio), jnp.zeros_like(ratio), adv[:, None] * jnp.ones((2, 4)), mask, **kw)
    np.testing.assert_allclose(loss_bt, 7.0 / 4, rtol=1e-6)


def test_gradient_is_zero_on_masked_tokens():
    rng = np.random.RandomState(0)
    logp = jnp.asarray(rng.randn(3, 6) * 0.1 - 1.0)
    old = jnp.asarray(rng.randn(3, 6) * 0.1 - 1.0)
    mask = jnp.asarray(rng.randint(0, 2, (3, 6)))
    g = jax.grad(lambda lp: policy_loss(lp, old, jnp.array([1.0, -2.0, 0.5]), mask)[0])(logp)
    assert np.all(np.asarray(g)[np.asarray(mask) == 0] == 0)
    assert np.any(np.asarray(g)[np.asarray(mask) == 1] != 0)


def test_kl_estimators_by_definition():
    logp, ref = jnp.array([[-1.0, -3.0]]), jnp.array([[-2.0, -1.0]])
    d = np.array([1.0, -2.0])
    np.testing.assert_allclose(kl_penalty(logp, ref, "k1")[0], d, rtol=1e-6)
    np.testing.assert_allclose(kl_penalty(logp, ref, "k2")[0], 0.5 * d**2, rtol=1e-6)
    np.testing.assert_allclose(kl_penalty(logp, ref, "k3")[0], np.exp(-d) + d - 1, rtol=1e-6)
    assert np.all(np.asarray(kl_penalty(logp, ref, "k3")) >= 0)
    # k1 and k3 are unbiased for KL(p || q): check by exact expectation over a small distribution
    p, q = np.array([0.5, 0.3, 0.2]), np.array([0.2, 0.5, 0.3])
    exact = float(np.sum(p * np.log(p / q)))
    for kind in ("k1", "k3"):
        est = np.sum(p * np.asarray(kl_penalty(jnp.log(p), jnp.log(q), kind)))
        np.testing.assert_allclose(est, exact, rtol=1e-5)
    with pytest.raises(ValueError, match="unknown KL"):
        kl_penalty(logp, ref, "k4")


def test_aggregate_rejects_unknown():
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate(jnp.ones((1, 2)), jnp.ones((1, 2)), "mean")
