"""The endogenous reward (arXiv 2506.23235): a language model's logits read as a soft Q-function.

Pure, jittable functions over logits, ids and masks. Shape glossary: B batch, T tokens, V vocab.
`logits_BTV` is the model's forward over `input_ids_BT`: position t predicts token t + 1.

    V(l)       = alpha * logsumexp(l / alpha)
    r_t        = logits[t - 1, a_t] - V_next(t)          for a response token a_t at position t
    V_next(t)  = V(logits[t])  if position t + 1 is a response token,
                 0 (terminal="zero") or V(logits[t]) (terminal="bootstrap") for the last one
    R          = sum_t r_t                                no length normalisation

Telescoping gives, for any alpha, sum_t r_t = alpha * sum_t log softmax(l / alpha)[a_t] + V(s_1) - V(s_{H+1}).
The host-side scorer over (prompt, response) texts lives in `jaxalign.rewards.endo_scorer`.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

Terminal = Literal["zero", "bootstrap"]


def soft_values(logits_BTV: jax.Array, alpha: float = 1.0) -> jax.Array:
    """V = alpha * logsumexp(logits / alpha) over the vocabulary, in float32: [B, T]."""
    logits = logits_BTV.astype(jnp.float32)
    return alpha * jax.nn.logsumexp(logits / alpha, axis=-1)


def picked_logits(logits_BTV: jax.Array, input_ids_BT: jax.Array) -> jax.Array:
    """logits[t - 1, input_ids[t]] at position t (0 at t = 0, which has no predictor): [B, T]."""
    prev = jnp.take_along_axis(logits_BTV[:, :-1].astype(jnp.float32), input_ids_BT[:, 1:, None], axis=-1)[..., 0]
    return jnp.pad(prev, ((0, 0), (1, 0)))


def rewards_from_parts(picked_BT: jax.Array, values_BT: jax.Array, response_mask_BT: jax.Array, *,
                       terminal: Terminal = "zero") -> jax.Array:
    """Token rewards from q_t = logits[t-1, a_t] and V_t = V(logits[t]) (both [B, T]).

    Split out so that callers that never materialise the full logits (chunked heads, see
    `EndogenousScorer`) share the exact formula with `token_rewards`.
    """
    if terminal not in ("zero", "bootstrap"):
        raise ValueError(f"terminal must be 'zero' or 'bootstrap', got {terminal!r}")
    t = response_mask_BT.shape[1]
    # Position 0 has no predicting logits: it can never be scored (a response always has a prompt).
    resp = response_mask_BT.astype(bool) & (jnp.arange(t) > 0)
    next_resp = jnp.pad(resp[:, 1:], ((0, 0), (0, 1)))
    keep_v = next_resp if terminal == "zero" else jnp.ones_like(next_resp)
    v_next = jnp.where(keep_v, values_BT, 0.0)
    return jnp.where(resp, picked_BT - v_next, 0.0)


def token_rewards(logits_BTV: jax.Array, input_ids_BT: jax.Array, response_mask_BT: jax.Array, *,
                  alpha: float = 1.0, terminal: Terminal = "zero") -> jax.Array:
    """Per-token endogenous rewards [B, T] (float32); 0 at non-response positions.

    `response_mask_BT` is 1 on response tokens. Padding on either side and several responses per
    batch are fine: only logits at a response token's predecessor and at response tokens are read.
    A response token at position t whose next position is not a response token is a "last" token:
    its next value is 0 (`terminal="zero"`, the terminal state) or V(logits[t]) ("bootstrap").
    """
    picked = picked_logits(logits_BTV, input_ids_BT)
    values = soft_values(logits_BTV, alpha)
    return rewards_from_parts(picked, values, response_mask_BT, terminal=terminal)


def response_rewards(logits_BTV: jax.Array, input_ids_BT: jax.Array, response_mask_BT: jax.Array, *,
                     alpha: float = 1.0, terminal: Terminal = "zero") -> jax.Array:
    """The response reward [B]: the sum of `token_rewards` over the response (no length normalisation)."""
    return token_rewards(logits_BTV, input_ids_BT, response_mask_BT, alpha=alpha, terminal=terminal).sum(axis=-1)


def last_response_token(response_mask_BT: jax.Array) -> jax.Array:
    """Boolean [B, T]: the last response token of each row (all False for a row without response)."""
    resp = response_mask_BT.astype(bool)
    t = resp.shape[1]
    idx = jnp.max(jnp.where(resp, jnp.arange(t), -1), axis=-1)
    return (jnp.arange(t)[None] == idx[:, None]) & (idx[:, None] >= 0)


def grpo_token_rewards(logits_BTV: jax.Array, input_ids_BT: jax.Array, response_mask_BT: jax.Array, *,
                       alpha: float = 1.0, terminal: Terminal = "zero",
                       mode: Literal["dense", "sparse"] = "dense") -> jax.Array:
    """The endogenous reward for RL, aligned with the tokens [B, T].

    "dense": r_t on each response token; "sparse": the response total on its last token, 0 elsewhere.
    Both sum to the same response reward. (GRPO's target-aligned arrays index token t + 1 at
    position t: shift left by one, `r[:, 1:]`, to align with them.)
    """
    r = token_rewards(logits_BTV, input_ids_BT, response_mask_BT, alpha=alpha, terminal=terminal)
    if mode == "dense":
        return r
    if mode == "sparse":
        return jnp.where(last_response_token(response_mask_BT), r.sum(axis=-1, keepdims=True), 0.0)
    raise ValueError(f"mode must be 'dense' or 'sparse', got {mode!r}")


def verifier_logprob(last_logits_BV: jax.Array, yes_id: int, alpha: float = 1.0) -> jax.Array:
    """alpha * log pi_alpha(yes | context) with pi_alpha = softmax(logits / alpha): [B].

    `last_logits_BV` are the logits at the last position of "x, y, 'Is the answer correct?'" (the
    verifier special case of the endogenous reward); see `EndogenousScorer.verify` for the texts.
    """
    logits = last_logits_BV.astype(jnp.float32) / alpha
    return alpha * jax.nn.log_softmax(logits, axis=-1)[:, yes_id]
