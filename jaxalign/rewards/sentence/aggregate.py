"""Sentence-level reward math (arXiv 2503.04793): sentence rewards, attention aggregation, losses.

Pure, jittable functions. Shape glossary: B batch, N END tokens (sentence slots), M query/key
width (m), T tokens. `valid_BN` marks the real END slots of each row; they form a prefix (slots
0 .. count - 1), the padding follows.

    s_0 = v_0,  s_k = v_k - v_{k-1}                  sentence reward: end value minus start value
    q = rope_{N-1}(q),  kappa_k = rope_k(k_k)         rotary encoding over the sentence index
    w = softmax_k(q . kappa_k / sqrt(m)),  R = sum_k w_k s_k
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Finite (not -inf): a row with no valid slot gives uniform weights over zero rewards, not NaN.
_NEG = -1e30


def rotate_pairs(x_XM: jax.Array, index_X: jax.Array, theta: float = 10000.0) -> jax.Array:
    """Rotates dimension pairs (2j, 2j + 1) of `x` [..., M] by angle index * theta^(-2j / M)."""
    m = x_XM.shape[-1]
    if m % 2:
        raise ValueError(f"rotary width must be even, got {m}")
    freq = theta ** (-2.0 * jnp.arange(m // 2, dtype=jnp.float32) / m)
    angle = index_X.astype(jnp.float32)[..., None] * freq
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    x = x_XM.astype(jnp.float32)
    even, odd = x[..., 0::2], x[..., 1::2]
    out = jnp.stack([even * cos - odd * sin, even * sin + odd * cos], axis=-1)
    return out.reshape(x.shape)


def sentence_rewards(values_BN: jax.Array, valid_BN: jax.Array) -> jax.Array:
    """s_0 = v_0, s_k = v_k - v_{k-1} on valid slots, 0 on padding: [B, N]."""
    valid = valid_BN.astype(bool)
    v = jnp.where(valid, values_BN.astype(jnp.float32), 0.0)
    prev = jnp.pad(v[:, :-1], ((0, 0), (1, 0)))
    return jnp.where(valid, v - prev, 0.0)


def last_valid_index(valid_BN: jax.Array) -> jax.Array:
    """Index of the last valid slot of each row [B] (0 for a row without one)."""
    return jnp.maximum(valid_BN.astype(jnp.int32).sum(axis=-1) - 1, 0)


def attention_weights(queries_BM: jax.Array, keys_BNM: jax.Array, valid_BN: jax.Array, *, use_rope: bool = True,
                      rope_theta: float = 10000.0) -> jax.Array:
    """w = softmax over valid k of q . kappa_k / sqrt(m), q and keys rotated by their sentence index: [B, N]."""
    b, n, m = keys_BNM.shape
    q = queries_BM.astype(jnp.float32)
    k = keys_BNM.astype(jnp.float32)
    if use_rope:
        q = rotate_pairs(q, last_valid_index(valid_BN), rope_theta)
        k = rotate_pairs(k, jnp.broadcast_to(jnp.arange(n), (b, n)), rope_theta)
    scores = jnp.einsum("bm,bnm->bn", q, k) / jnp.sqrt(jnp.float32(m))
    return jax.nn.softmax(jnp.where(valid_BN.astype(bool), scores, _NEG), axis=-1)


def aggregate(values_BN: jax.Array, queries_BM: jax.Array, keys_BNM: jax.Array, valid_BN: jax.Array, *,
              use_rope: bool = True, rope_theta: float = 10000.0) -> tuple[jax.Array, jax.Array]:
    """The response score R [B] and the sentence rewards s [B, N].

    `values_BN` are v at the END positions p_0..p_{N-1}, `keys_BNM` the key head there and
    `queries_BM` the query head at the last valid END. R = sum_k w_k s_k with the attention weights
    of `attention_weights` (rotary over the sentence index unless `use_rope=False`).
    """
    s = sentence_rewards(values_BN, valid_BN)
    w = attention_weights(queries_BM, keys_BNM, valid_BN, use_rope=use_rope, rope_theta=rope_theta)
    return jnp.sum(w * s, axis=-1), s


def sum_of_values(values_BN: jax.Array, valid_BN: jax.Array) -> jax.Array:
    """The no-attention ablation's score R = sum_k v_k over valid slots [B]; pair it with
    `bt_scale = 1 / max(N_chosen, N_rejected)` in `bradley_terry_loss`."""
    return jnp.sum(jnp.where(valid_BN.astype(bool), values_BN.astype(jnp.float32), 0.0), axis=-1)


def bradley_terry_loss(chosen_B: jax.Array, rejected_B: jax.Array, *, scale_B: jax.Array | None = None,
                       reward_penalty: float = 0.0, weight_B: jax.Array | None = None) -> tuple[jax.Array, dict]:
    """L = mean(-log sigmoid(scale * (R_chosen - R_rejected))) + reward_penalty * mean(R_c^2 + R_r^2).

    `scale_B` multiplies the logit (default 1); `weight_B` (default all 1) weighs pairs, 0 for
    padding pairs. Returns (loss, metrics) with accuracy (chosen strictly above rejected) and margin.
    """
    c = chosen_B.astype(jnp.float32)
    r = rejected_B.astype(jnp.float32)
    weight = jnp.ones_like(c) if weight_B is None else weight_B.astype(jnp.float32)
    denom = jnp.maximum(weight.sum(), 1.0)
    logit = c - r if scale_B is None else (c - r) * scale_B
    nll = -jax.nn.log_sigmoid(logit)  # log_sigmoid is stable for large |logit|
    penalty = reward_penalty * (c * c + r * r)
    loss = jnp.sum(weight * (nll + penalty)) / denom
    metrics = {"bt_nll": jnp.sum(weight * nll) / denom,
               "accuracy": jnp.sum(weight * (c > r)) / denom,
               "margin": jnp.sum(weight * (c - r)) / denom}
    return loss, metrics


def dense_sentence_rewards(sentence_rewards_BN: jax.Array, token_ends_BN: jax.Array, valid_BN: jax.Array,
                           length: int) -> jax.Array:
    """Dense rewards for RL [B, length]: s_k on the last token of sentence k (k >= 1), s_0 dropped.

    `token_ends_BN[:, k]` is the token index (in the caller's coordinates, e.g. among the response
    tokens) of the last token of sentence k; slot 0 (the prompt) is ignored. Tokens that end no
    sentence get 0; rewards of invalid slots are dropped.
    """
    b, n = sentence_rewards_BN.shape
    keep = valid_BN.astype(bool) & (jnp.arange(n) >= 1)
    s = jnp.where(keep, sentence_rewards_BN.astype(jnp.float32), 0.0)
    idx = jnp.where(keep, token_ends_BN, length)  # out of range: dropped by the scatter
    return jnp.zeros((b, length), jnp.float32).at[jnp.arange(b)[:, None], idx].add(s, mode="drop")
