"""Per-token log-probabilities of targets, computed in sequence chunks.

Full logits [B, T, V] in float32 are the largest activation of LM training (4K tokens x 151K
vocabulary is 2.4 GB per sequence). `target_logprobs` runs the output head over chunks of the
sequence under `jax.checkpoint`, keeping only [B, T] results; the backward pass recomputes each
chunk's logits instead of storing them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxalign.models.transformer import Transformer


def _chunk_stats(model: Transformer, h_BCD, targets_BC, with_entropy: bool):
    logits = model.logits(h_BCD)  # [B, C, V] float32
    logz = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, targets_BC[..., None], axis=-1)[..., 0]
    logp = picked - logz
    if not with_entropy:
        return logp, jnp.zeros_like(logp)
    probs = jnp.exp(logits - logz[..., None])
    entropy = logz - jnp.sum(probs * logits, axis=-1)
    return logp, entropy


def target_logprobs(model: Transformer, input_ids_BT, attention_mask_BT, positions_BT, *, segment_ids_BT=None,
                    chunk: int = 256, with_entropy: bool = False) -> tuple[jax.Array, jax.Array]:
    """log p(input_ids[t + 1] | input_ids[<= t]) at position t, and optionally the entropy there.

    Returns (logp [B, T], entropy [B, T]); the last position (no next token) is 0. Masking is the
    caller's job: positions whose target is padding or belongs to another segment are garbage.
    """
    h = model.hidden_states(input_ids_BT, positions_BT, attention_mask_BT, segment_ids_BT)
    b, t, d = h.shape
    targets = jnp.concatenate([input_ids_BT[:, 1:], jnp.zeros((b, 1), input_ids_BT.dtype)], axis=1)
    chunk = min(chunk, t)
    pad = -t % chunk
    if pad:
        h = jnp.pad(h, ((0, 0), (0, pad), (0, 0)))
        targets = jnp.pad(targets, ((0, 0), (0, pad)))
    n = (t + pad) // chunk
    hs = h.reshape(b, n, chunk, d).transpose(1, 0, 2, 3)
    ts = targets.reshape(b, n, chunk).transpose(1, 0, 2)
    fn = jax.checkpoint(lambda hc, tc: _chunk_stats(model, hc, tc, with_entropy))
    logp, ent = jax.lax.map(lambda a: fn(*a), (hs, ts))
    logp = logp.transpose(1, 0, 2).reshape(b, n * chunk)[:, :t]
    ent = ent.transpose(1, 0, 2).reshape(b, n * chunk)[:, :t]
    last = jnp.arange(t) == t - 1
    return jnp.where(last, 0.0, logp), jnp.where(last, 0.0, ent)
