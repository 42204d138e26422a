"""A paged KV cache: one pool of fixed-size pages per layer, per-row page tables and lengths.

The layout is the one of JAX's TPU ragged paged attention kernel
(`jax.experimental.pallas.ops.tpu.ragged_paged_attention`), so that kernel reads it as is:

* `pages` [P, page_size, 2K, H] per layer: keys at the even combined heads, values at the odd ones;
* `page_table` [R, pages_per_row] int32: the pages of row r in order (slot s of row r lives in page
  `page_table[r, s // page_size]` at offset `s % page_size`); unused entries may hold any page;
* `lengths` [R] int32: the tokens of each row held in its pages.

Queries are ragged too: the tokens of all rows that have new tokens, row after row, `cu_q_lens`
[R + 1] their offsets (row r's queries are tokens `cu_q_lens[r]:cu_q_lens[r + 1]`, the last q_len
of its `lengths[r]` tokens, so they attend causally among themselves and to everything before).

`paged_attention` is the pure-JAX path (a gather of each row's pages; any backend, and the
reference the kernels are tested against); the engine that allocates and frees pages comes with
the continuous-batching rollout (issue 16).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxalign.models.attention_ops import MASK_VALUE
from jaxalign.models.config import ModelConfig
from jaxalign.models.decode import DecodeWeights, kv_cache_dtype, layer_out, layer_qkv, linear
from jaxalign.models.layers import rms_norm


def combine(k_TKH: jax.Array, v_TKH: jax.Array) -> jax.Array:
    """[T, 2K, H] with keys at even and values at odd combined heads (the page layout)."""
    t, kh, h = k_TKH.shape
    return jnp.stack([k_TKH, v_TKH], axis=2).reshape(t, 2 * kh, h)


def write(pages_PSCH: jax.Array, page_table_RP: jax.Array, rows_T: jax.Array, slots_T: jax.Array,
          k_TKH: jax.Array, v_TKH: jax.Array) -> jax.Array:
    """Stores token t's key and value at slot `slots[t]` of row `rows[t]`; returns the new pool.

    Tokens with a negative row are skipped (padding of a ragged chunk)."""
    page_size = pages_PSCH.shape[1]
    valid = rows_T >= 0
    page = page_table_RP[jnp.maximum(rows_T, 0), slots_T // page_size]
    page = jnp.where(valid, page, pages_PSCH.shape[0])  # out of bounds: dropped by the scatter
    kv = combine(k_TKH, v_TKH).astype(pages_PSCH.dtype)
    return pages_PSCH.at[page, slots_T % page_size].set(kv, mode="drop")


def rows_of_tokens(cu_q_lens_R1: jax.Array, num_rows: jax.Array, num_tokens: int) -> jax.Array:
    """[T] int32: the row of each query token, -1 past `cu_q_lens[num_rows]` (padding)."""
    t = jnp.arange(num_tokens, dtype=jnp.int32)
    rows = jnp.searchsorted(cu_q_lens_R1[1:], t, side="right").astype(jnp.int32)
    return jnp.where(t < cu_q_lens_R1[num_rows], rows, -1)


def query_slots(lengths_R: jax.Array, cu_q_lens_R1: jax.Array, rows_T: jax.Array) -> jax.Array:
    """[T] int32: the slot of each query token in its row, `lengths[r] - q_len_r + j` for the j-th
    query of row r (`lengths` count the row's tokens with this chunk)."""
    row = jnp.maximum(rows_T, 0)
    start, end = cu_q_lens_R1[row], cu_q_lens_R1[row + 1]
    return lengths_R[row] - (end - start) + (jnp.arange(rows_T.shape[0]) - start)


def paged_attention(q_TNH: jax.Array, pages_PSCH: jax.Array, lengths_R: jax.Array, page_table_RP: jax.Array,
                    cu_q_lens_R1: jax.Array, num_rows: jax.Array, *, sm_scale: float | None = None) -> jax.Array:
    """Causal attention of ragged queries over their rows' pages; [T, N, H], 0 for padding tokens.

    `num_rows` is a scalar (or [1], as the TPU kernel takes it). Each query token attends the keys
    of its own row at slots <= its position, `lengths[r] - q_len_r + j` for the j-th query of row r.
    """
    t, n, h = q_TNH.shape
    kh2 = pages_PSCH.shape[2]
    kh = kh2 // 2
    g = n // kh
    num_rows = jnp.reshape(num_rows, ())
    scale = 1.0 / math.sqrt(h) if sm_scale is None else sm_scale
    rows = rows_of_tokens(cu_q_lens_R1, num_rows, t)
    row = jnp.maximum(rows, 0)
    kv_len = lengths_R[row]
    pos = query_slots(lengths_R, cu_q_lens_R1, rows)
    kv = pages_PSCH[page_table_RP[row]]  # [T, pages_per_row, page_size, 2K, H]
    kv = kv.reshape(t, -1, kh2, h)  # [T, S, 2K, H]
    k, v = kv[:, :, 0::2], kv[:, :, 1::2]
    qg = (q_TNH.astype(jnp.float32) * scale).reshape(t, kh, g, h)
    scores = jnp.einsum("tkgh,tskh->tkgs", qg, k.astype(jnp.float32))
    slots = jnp.arange(kv.shape[1])
    mask = (slots[None, :] <= pos[:, None]) & (slots[None, :] < kv_len[:, None]) & (rows >= 0)[:, None]
    scores = jnp.where(mask[:, None, None], scores, MASK_VALUE)
    probs = jax.nn.softmax(scores, axis=-1)
    out = jnp.einsum("tkgs,tskh->tkgh", probs, v.astype(jnp.float32)).reshape(t, n, h)
    return jnp.where((rows >= 0)[:, None, None], out, 0).astype(q_TNH.dtype)


def copy_pages(pages_PSCH: jax.Array, copies: jax.Array) -> jax.Array:
    """Copies page `copies[i, 0]` onto page `copies[i, 1]` for each i ([C, 2] int32): the copy on
    write of a shared prompt's partly filled last page (`PageAllocator.share`)."""
    return pages_PSCH.at[copies[:, 1]].set(pages_PSCH[copies[:, 0]])


def paged_forward(config: ModelConfig, weights: DecodeWeights, ids_T: jax.Array, positions_T: jax.Array,
                  pages: tuple[jax.Array, ...], lengths_R: jax.Array, page_table_RP: jax.Array,
                  cu_q_lens_R1: jax.Array, num_rows: jax.Array) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    """A ragged chunk of new tokens (prompt, tool output or one decode token per row) through the
    model over a paged cache: writes their keys / values into the rows' pages and returns
    (logits [T, V] float32, pages). `lengths` count each row's tokens including this chunk; the
    row's pages must already be reserved (`PageAllocator.reserve`). Padding tokens (past
    `cu_q_lens[num_rows]`) write nothing and get garbage logits."""
    c = config
    cd = jnp.dtype(c.dtype)
    rows = rows_of_tokens(cu_q_lens_R1, jnp.reshape(num_rows, ()), ids_T.shape[0])
    slots = query_slots(lengths_R, cu_q_lens_R1, rows)
    x = jnp.take(weights.embed, ids_T, axis=0).astype(cd)[None]  # [1, T, D]
    out_pages = []
    for w, pool in zip(weights.layers, pages):
        q, k, v = layer_qkv(c, w, x, positions_T[None])
        pool = write(pool, page_table_RP, rows, slots, k[0], v[0])
        attn = paged_attention(q[0], pool.astype(cd), lengths_R, page_table_RP, cu_q_lens_R1, num_rows)
        x = layer_out(c, w, x, attn[None])
        out_pages.append(pool)
    h = rms_norm(x[0], weights.final_norm, c.rms_norm_eps)
    return linear(h, weights.head.astype(cd), out_dtype=jnp.float32), tuple(out_pages)


def init_pages(config: ModelConfig, num_pages: int, page_size: int, dtype=None) -> tuple[jax.Array, ...]:
    """An empty pool per layer, [num_pages, page_size, 2K, H] (dtype: `kv_cache_dtype(config)`)."""
    dt = jnp.dtype(dtype or kv_cache_dtype(config))
    shape = (num_pages, page_size, 2 * config.num_kv_heads, config.head_dim)
    return tuple(jnp.zeros(shape, dt) for _ in range(config.num_layers))
