"""Endogenous reward: hand-computed values, the telescoping identity, padding and batch invariance."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxalign.models import ModelConfig, forward, init_model
from jaxalign.rewards.endogenous import (
    grpo_token_rewards,
    response_rewards,
    soft_values,
    token_rewards,
    verifier_logprob,
)

# A 3-token vocabulary; logits are logs of small counts so every value is a log of a number.
COUNTS = np.array([[1.0, 2.0, 1.0],   # position 0 predicts token 1
                   [1.0, 1.0, 2.0],   # position 1 predicts token 2
                   [3.0, 1.0, 1.0],   # position 2 predicts token 3
                   [1.0, 1.0, 1.0]])  # position 3: after the last token
LOGITS = np.log(COUNTS)[None]          # [1, 4, 3]
IDS = np.array([[0, 1, 2, 0]])         # prompt = token 0; response = tokens 1..3 = (1, 2, 0)
MASK = np.array([[0, 1, 1, 1]])


def v(counts, alpha):
    """V = alpha * log sum_a exp(log(c_a) / alpha) = alpha * log sum_a c_a^(1/alpha), written out."""
    return alpha * math.log(sum(c ** (1.0 / alpha) for c in counts))


@pytest.mark.parametrize("alpha", [1.0, 0.5, 2.0])
@pytest.mark.parametrize("terminal", ["zero", "bootstrap"])
def test_hand_computed_three_token_vocab(alpha, terminal):
    if alpha == 1.0:  # V(l) = log(sum of counts): log 4, log 4, log 5, log 3
        expected = [0.0, math.log(2) - math.log(4), math.log(2) - math.log(5),
                    math.log(3) - (0.0 if terminal == "zero" else math.log(3))]
    else:
        expected = [0.0, math.log(2) - v(COUNTS[1], alpha), math.log(2) - v(COUNTS[2], alpha),
                    math.log(3) - (0.0 if terminal == "zero" else v(COUNTS[3], alpha))]
    got = np.asarray(token_rewards(LOGITS, IDS, MASK, alpha=alpha, terminal=terminal))
    np.testing.assert_allclose(got[0], expected, rtol=1e-6, atol=1e-6)
    total = np.asarray(response_rewards(LOGITS, IDS, MASK, alpha=alpha, terminal=terminal))
    np.testing.assert_allclose(total, [sum(expected)], rtol=1e-6)


def test_alpha_one_values_are_logs_of_counts():
    np.testing.assert_allclose(np.asarray(soft_values(LOGITS))[0], np.log([4, 4, 5, 3]), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(soft_values(LOGITS, 0.5))[0],
                               [0.5 * math.log(sum(c * c for c in row)) for row in COUNTS], rtol=1e-6)


@pytest.mark.parametrize("alpha", [1.0, 0.3, 1.7])
@pytest.mark.parametrize("terminal", ["zero", "bootstrap"])
def test_telescoping_identity_on_random_logits(alpha, terminal):
    rng = np.random.default_rng(0)
    b, t, vocab = 4, 12, 7
    logits = rng.normal(size=(b, t, vocab)).astype(np.float32) * 3
    ids = rng.integers(0, vocab, size=(b, t))
    starts, ends = [1, 3, 5, 2], [12, 9, 11, 3]  # response = positions start..end-1 (end exclusive)
    mask = np.zeros((b, t), np.int32)
    for i, (s, e) in enumerate(zip(starts, ends)):
        mask[i, s:e] = 1
    got = np.asarray(response_rewards(logits, ids, mask, alpha=alpha, terminal=terminal))
    for i, (s, e) in enumerate(zip(starts, ends)):
        scaled = logits[i].astype(np.float64) / alpha
        logz = np.log(np.exp(scaled - scaled.max(-1, keepdims=True)).sum(-1)) + scaled.max(-1)
        logpi = sum(scaled[p - 1, ids[i, p]] - logz[p - 1] for p in range(s, e))  # log softmax(l/alpha)[a_t]
        v_first = alpha * logz[s - 1]                                          # V(s_1)
        v_last = 0.0 if terminal == "zero" else alpha * logz[e - 1]            # V(s_{H+1})
        np.testing.assert_allclose(got[i], alpha * logpi + v_first - v_last, rtol=1e-4, atol=1e-4)


def test_zero_outside_the_response_and_garbage_logits_ignored():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(1, 8, 5)).astype(np.float32)
    ids = rng.integers(0, 5, size=(1, 8))
    mask = np.array([[0, 0, 0, 1, 1, 1, 0, 0]])
    r = np.asarray(token_rewards(logits, ids, mask))
    assert np.all(r[0, [0, 1, 2, 6, 7]] == 0)
    # Logits at positions that neither predict a response token nor follow one are never read.
    changed = logits.copy()
    changed[0, [0, 1, 6, 7]] = 1e3
    np.testing.assert_array_equal(np.asarray(token_rewards(changed, ids, mask)), r)
    # ... while the position after the last response token is read only when bootstrapping.
    changed[0, 5] = 1e3
    assert not np.array_equal(np.asarray(token_rewards(changed, ids, mask, terminal="bootstrap")),
                              np.asarray(token_rewards(logits, ids, mask, terminal="bootstrap")))


def test_jittable_and_rejects_bad_terminal():
    f = jax.jit(lambda lg, i, m: response_rewards(lg, i, m, alpha=0.7, terminal="bootstrap"))
    np.testing.assert_allclose(np.asarray(f(LOGITS, IDS, MASK)),
                               np.asarray(response_rewards(LOGITS, IDS, MASK, alpha=0.7, terminal="bootstrap")),
                               rtol=1e-6)
    with pytest.raises(ValueError, match="terminal"):
        token_rewards(LOGITS, IDS, MASK, terminal="last")


def test_padding_and_batch_invariance_through_a_model():
    """The same (prompt, response) scores the same alone, left-padded, right-padded and batched."""
    model = init_model(ModelConfig.tiny(vocab_size=32), seed=0)
    rng = np.random.default_rng(2)
    rows = [(rng.integers(3, 32, size=p).tolist(), rng.integers(3, 32, size=r).tolist()) for p, r in
            [(4, 5), (7, 2), (3, 9)]]

    def score(rows, t, left):
        ids = np.zeros((len(rows), t), np.int32)
        att = np.zeros((len(rows), t), np.int32)
        resp = np.zeros((len(rows), t), np.int32)
        for i, (p, r) in enumerate(rows):
            n = len(p) + len(r)
            o = t - n if left else 0
            ids[i, o:o + n] = p + r
            att[i, o:o + n] = 1
            resp[i, o + len(p):o + n] = 1
        logits = forward(model, ids, attention_mask=att)
        return np.asarray(response_rewards(logits, ids, resp, alpha=0.8, terminal="bootstrap"))

    alone = np.array([score([row], len(row[0]) + len(row[1]), False)[0] for row in rows])
    np.testing.assert_allclose(score(rows, 16, False), alone, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(score(rows, 16, True), alone, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(score(rows[::-1], 20, True)[::-1], alone, rtol=1e-4, atol=1e-4)


def test_grpo_dense_and_sparse_sum_to_the_response_reward():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(2, 6, 4)).astype(np.float32)
    ids = rng.integers(0, 4, size=(2, 6))
    mask = np.array([[0, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1]])
    dense = np.asarray(grpo_token_rewards(logits, ids, mask, mode="dense"))
    sparse = np.asarray(grpo_token_rewards(logits, ids, mask, mode="sparse"))
    total = np.asarray(response_rewards(logits, ids, mask))
    np.testing.assert_allclose(dense, np.asarray(token_rewards(logits, ids, mask)))
    np.testing.assert_allclose(sparse.sum(-1), total, rtol=1e-5)
    np.testing.assert_allclose(sparse[0], [0, 0, 0, total[0], 0, 0], rtol=1e-5)
    np.testing.assert_allclose(sparse[1], [0, 0, 0, 0, 0, total[1]], rtol=1e-5)
    with pytest.raises(ValueError, match="mode"):
        grpo_token_rewards(logits, ids, mask, mode="both")


def test_verifier_logprob_hand_computed():
    last = jnp.log(jnp.array([[1.0, 3.0, 4.0]]))
    np.testing.assert_allclose(np.asarray(verifier_logprob(last, 1)), [math.log(3 / 8)], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(verifier_logprob(last, 2, alpha=0.5)),
                               [0.5 * math.log(16 / (1 + 9 + 16))], rtol=1e-6)
