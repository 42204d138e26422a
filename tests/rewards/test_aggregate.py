"""Sentence-level reward math: hand-computed aggregation (with and without rotary), BT loss, dense rewards."""

import math

import jax
import numpy as np
import pytest

from jaxalign.rewards.sentence.aggregate import (
    aggregate,
    bradley_terry_loss,
    dense_sentence_rewards,
    rotate_pairs,
    sentence_rewards,
    sum_of_values,
)


def softmax(x):
    e = [math.exp(v) for v in x]
    return [v / sum(e) for v in e]


def test_rotate_pairs_hand_computed():
    # m = 4, theta = 100: pair 0 turns by index * 1, pair 1 by index * 100^(-2/4) = index / 10.
    x = np.array([[1.0, 0.0, 0.0, 2.0]])
    got = np.asarray(rotate_pairs(x, np.array([3]), theta=100.0))[0]
    expected = [math.cos(3), math.sin(3), -2 * math.sin(0.3), 2 * math.cos(0.3)]
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_sentence_rewards_are_value_differences():
    v = np.array([[1.0, 3.0, 2.0, 7.0], [0.5, -1.0, 9.0, 9.0]])
    valid = np.array([[1, 1, 1, 1], [1, 1, 0, 0]])
    np.testing.assert_allclose(np.asarray(sentence_rewards(v, valid)), [[1, 2, -1, 5], [0.5, -1.5, 0, 0]])


def test_aggregate_hand_computed_with_and_without_rotary():
    # m = 2: the only pair turns by index radians. v = (1, 3, 2): s = (1, 2, -1).
    values = np.array([[1.0, 3.0, 2.0]])
    queries = np.array([[1.0, 0.0]])
    keys = np.array([[[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]])
    valid = np.ones((1, 3), bool)
    s = [1.0, 2.0, -1.0]
    # Rotary: q turned by 2 (the last valid index), key k by k: q.kappa_k = cos(2 - k), over sqrt(2).
    w = softmax([math.cos(2 - k) / math.sqrt(2) for k in range(3)])
    r, got_s = aggregate(values, queries, keys, valid)
    np.testing.assert_allclose(np.asarray(got_s)[0], s, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(r), [sum(wk * sk for wk, sk in zip(w, s))], rtol=1e-6)
    # No rotary: every score is 1 / sqrt(2), uniform weights.
    r, _ = aggregate(values, queries, keys, valid, use_rope=False)
    np.testing.assert_allclose(np.asarray(r), [2.0 / 3.0], rtol=1e-6)


def test_aggregate_hand_computed_wider_heads_padding_and_theta():
    # m = 4, theta = 100; row 0 has two valid slots (the query turns by 1), slot 2 is padding.
    values = np.array([[2.0, 5.0, 100.0]])
    queries = np.array([[0.0, 1.0, 1.0, 0.0]])
    keys = np.array([[[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 1.0, 0.0], [9.0, 9.0, 9.0, 9.0]]])
    valid = np.array([[1, 1, 0]], bool)
    q = [-math.sin(1), math.cos(1), math.cos(0.1), math.sin(0.1)]
    k0 = [1.0, 0.0, 0.0, 1.0]                                          # index 0: unchanged
    k1 = [0.0, 0.0, math.cos(0.1), math.sin(0.1)]                      # index 1: pair 1 by 0.1
    scores = [sum(a * b for a, b in zip(q, k)) / 2.0 for k in (k0, k1)]  # sqrt(m) = 2
    w = softmax(scores)
    expected = w[0] * 2.0 + w[1] * 3.0
    r, s = aggregate(values, queries, keys, valid, rope_theta=100.0)
    np.testing.assert_allclose(np.asarray(r), [expected], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(s)[0], [2.0, 3.0, 0.0], rtol=1e-6)
    # Padding content never matters.
    values2, keys2 = values.copy(), keys.copy()
    values2[0, 2], keys2[0, 2] = -7.0, -3.0
    np.testing.assert_allclose(np.asarray(aggregate(values2, queries, keys2, valid, rope_theta=100.0)[0]), [expected],
                               rtol=1e-6)


def test_aggregate_is_jittable_and_batched_rows_are_independent():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(3, 5)).astype(np.float32)
    queries = rng.normal(size=(3, 8)).astype(np.float32)
    keys = rng.normal(size=(3, 5, 8)).astype(np.float32)
    valid = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]], bool)
    r_batch = np.asarray(jax.jit(aggregate)(values, queries, keys, valid)[0])
    for i, n in enumerate(valid.sum(1)):
        alone = aggregate(values[i:i + 1, :n], queries[i:i + 1], keys[i:i + 1, :n], valid[i:i + 1, :n])[0]
        np.testing.assert_allclose(r_batch[i], np.asarray(alone)[0], rtol=1e-5)


def test_no_attention_ablation_sums_values():
    values = np.array([[1.0, 2.0, 4.0], [3.0, -1.0, 8.0]])
    valid = np.array([[1, 1, 1], [1, 1, 0]])
    np.testing.assert_allclose(np.asarray(sum_of_values(values, valid)), [7.0, 2.0])


def test_bradley_terry_loss_hand_computed():
    chosen, rejected = np.array([2.0, 0.0]), np.array([1.0, 1.0])
    loss, m = bradley_terry_loss(chosen, rejected)
    expected = (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(1))) / 2
    np.testing.assert_allclose(float(loss), expected, rtol=1e-6)
    np.testing.assert_allclose(float(m["accuracy"]), 0.5)
    np.testing.assert_allclose(float(m["margin"]), 0.0)
    # R^2 penalty: 0.1 * mean(2^2 + 1^2, 0^2 + 1^2) = 0.3.
    loss, _ = bradley_terry_loss(chosen, rejected, reward_penalty=0.1)
    np.testing.assert_allclose(float(loss), expected + 0.3, rtol=1e-6)
    # Logit scale (the no-attention ablation: 1 / max(N_c, N_r)) and a padding pair of weight 0.
    loss, _ = bradley_terry_loss(np.array([2.0, 0.0, 50.0]), np.array([1.0, 1.0, -50.0]),
                                 scale_B=np.array([0.5, 0.25, 1.0]), weight_B=np.array([1.0, 1.0, 0.0]))
    expected = (math.log(1 + math.exp(-0.5)) + math.log(1 + math.exp(0.25))) / 2
    np.testing.assert_allclose(float(loss), expected, rtol=1e-6)


def test_bradley_terry_loss_is_stable_for_large_margins():
    loss, _ = bradley_terry_loss(np.array([-1000.0]), np.array([1000.0]))
    np.testing.assert_allclose(float(loss), 2000.0, rtol=1e-6)
    g = jax.grad(lambda c: bradley_terry_loss(c, np.array([1000.0]))[0])(np.array([-1000.0]))
    assert np.all(np.isfinite(np.asarray(g)))


def test_dense_sentence_rewards_place_s_k_on_sentence_ends():
    s = np.array([[10.0, 1.0, 2.0, 3.0], [10.0, 5.0, 6.0, 0.0]])
    ends = np.array([[0, 2, 4, 5], [0, 0, 3, 0]])
    valid = np.array([[1, 1, 1, 1], [1, 1, 1, 0]])
    got = np.asarray(dense_sentence_rewards(s, ends, valid, 6))
    np.testing.assert_allclose(got, [[0, 0, 1, 0, 2, 3], [5, 0, 0, 6, 0, 0]])  # s_0 dropped


@pytest.mark.parametrize("m", [3])
def test_rotary_needs_even_width(m):
    with pytest.raises(ValueError, match="even"):
        rotate_pairs(np.ones((1, m)), np.zeros((1,)))
