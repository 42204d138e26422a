"""Per-token log-probabilities of targets, computed in sequence chunks.

Full logits [B, T, V] in float32 are the largest activation of LM training (4K tokens x 151K
vocabulary is 2.4 GB per sequence). `target_logprobs` runs the output head over chunks of the
sequence under `jax.checkpoint`, keeping only [B, T] results; the backward pass recomputes each
chunk's logits instead of storing them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh

from jaxalign import sharding
from jaxalign.models.transformer import Transformer
from jaxalign.sharding import Rules


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


def compile_logprob_pass(graphdef, params: Any, mesh: Mesh, rules: Rules, *, micro_batch: int | None = None,
                         with_entropy: bool = True) -> Callable:
    """`(params, batch) -> (logp [B, T], entropy [B, T])`, no gradients, compiled under `mesh`.

    Parameters take their shardings from `rules`, batch rows are split over the batch axes, the
    activation constraints of the model are active while tracing, and the rows run `micro_batch`
    at a time (`lax.map`), so activation memory follows the micro-batch, not the whole batch. B must
    be a multiple of `micro_batch`, which must be a multiple of the batch shards. `batch` holds
    input_ids, attention_mask, positions (and optionally segment_ids) [B, T].
    """
    params_sh = sharding.tree_shardings(params, mesh, rules)
    rows_sh = sharding.batch_sharding(mesh, rules, 2, 0)

    def one(p, b):
        model = nnx.merge(graphdef, p)
        return target_logprobs(model, b["input_ids"], b["attention_mask"], b["positions"],
                               segment_ids_BT=b.get("segment_ids"), with_entropy=with_entropy)

    def traced(p, batch):
        with sharding.use_mesh(mesh, rules):
            rows = batch["input_ids"].shape[0]
            mb = micro_batch or rows
            if rows % mb:
                raise ValueError(f"log-prob pass: {rows} rows are not a multiple of micro_batch {mb}")
            if mb == rows:
                return one(p, batch)
            chunks = {k: v.reshape(rows // mb, mb, *v.shape[1:]) for k, v in batch.items()}
            pin = lambda x: sharding.constrain(x, (None, "batch", None))  # noqa: E731
            logp, ent = jax.lax.map(lambda c: one(p, jax.tree.map(
                lambda x: sharding.constrain(x, ("batch", None)), c)), jax.tree.map(pin, chunks))
            return logp.reshape(rows, -1), ent.reshape(rows, -1)

    return jax.jit(traced, in_shardings=(params_sh, rows_sh), out_shardings=(rows_sh, rows_sh))
