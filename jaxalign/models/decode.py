"""Cached, incremental decoding: the KV cache and a forward pass laid out for small batches.

Decoding reads every weight once per generated token, with only a handful of rows to multiply.
Its weights are therefore prepared once into a *decode layout* (`DecodeWeights`): one buffer per
layer (a decode step reads each in place; slicing stacked weights would copy them every step),
projections fused (q|k|v, gate|up) and stored [out, in] so a small-batch matmul streams each
weight row once (`linear`). A Sampler prepares them once per parameter update; `forward_cached`
prepares them inside the call for one-off use. The math is the same as `Transformer`; the tests
check cached decoding against the full forward pass.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx, struct

from jaxalign.models.config import ModelConfig
from jaxalign.models.layers import apply_rope, attention, rms_norm, rope_attention_factor, rope_inv_freq
from jaxalign.models.transformer import Transformer, prepare_inputs
from jaxalign.sharding import current as current_mesh

SMALL_M = 16  # rows at or below which `linear` streams weights instead of calling GEMM
SMALLEST_SPAN = 64  # shortest cache prefix a step attends over (see `_cached_attention`)


@struct.dataclass
class KVCache:
    """Fixed-size key/value slots shared by all rows of a batch.

    All rows write a chunk at the same slot `index`; rows differ only through `mask` (which slots
    hold real tokens) and the explicit positions the caller passes. Holes (masked slots) are
    therefore fine: a row can be paused while others decode, or receive a shorter tool output.
    One buffer per layer: a decode step updates each in place and reads it as is.
    """

    k: tuple[jax.Array, ...]  # L x [B, K, H, S]: q.k is then a plain matmul, no transposes
    v: tuple[jax.Array, ...]  # L x [B, K, S, H]
    mask: jax.Array  # [B, S] bool: slot holds a real token
    index: jax.Array  # [] int32: next slot to write

    @property
    def size(self) -> int:
        """Number of slots S."""
        return self.v[0].shape[2]


def kv_cache_dtype(config: ModelConfig, backend: str | None = None) -> jnp.dtype:
    """The KV cache's storage dtype: `config.kv_cache_dtype`, else bfloat16 on TPU / GPU (half the
    memory of float32 at the precision the kernels compute in) and the compute dtype on CPU."""
    if config.kv_cache_dtype is not None:
        return jnp.dtype(config.kv_cache_dtype)
    backend = backend or jax.default_backend()
    return jnp.dtype(config.dtype if backend == "cpu" else jnp.bfloat16)


def init_cache(config: ModelConfig, batch: int, size: int, dtype=None) -> KVCache:
    """An empty cache of `size` slots per row (dtype defaults to `kv_cache_dtype(config)`)."""
    dt = jnp.dtype(dtype or kv_cache_dtype(config))
    k_shape = (batch, config.num_kv_heads, config.head_dim, size)
    v_shape = (batch, config.num_kv_heads, size, config.head_dim)
    return KVCache(k=tuple(jnp.zeros(k_shape, dt) for _ in range(config.num_layers)),
                   v=tuple(jnp.zeros(v_shape, dt) for _ in range(config.num_layers)),
                   mask=jnp.zeros((batch, size), bool), index=jnp.zeros((), jnp.int32))


@struct.dataclass
class DecodeWeights:
    """A model's weights in decode layout (a pytree; see the module docstring)."""

    embed: jax.Array  # [V, D]
    head: jax.Array  # [V, D] output head, [out, in] (the embedding itself when tied)
    final_norm: jax.Array  # [D]
    layers: tuple[dict, ...]  # per layer: see `prepare_decode_weights`


def prepare_decode_weights(model: Transformer, dtype=None) -> DecodeWeights:
    """Copies a Transformer's weights into decode layout (traceable; jit it).

    Matrices and biases are stored in `dtype` (default: the compute dtype), cast once here rather
    than at every matmul of every step: half the memory and the weight traffic of float32 storage
    under bfloat16 compute, and the same values (each matmul cast them to the compute dtype
    anyway). Norm scales keep their storage dtype, as in `Transformer`.
    """
    c = model.config
    d, n, k, h = c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim
    wd = jnp.dtype(dtype or c.dtype)
    blk = model.layers
    get = lambda var, i: var.get_value()[i].astype(wd)  # noqa: E731
    norm = lambda var, i: var.get_value()[i]  # noqa: E731
    layers = []
    for i in range(c.num_layers):
        a, m = blk.attn, blk.mlp
        qkv = jnp.concatenate([get(a.q_proj, i).reshape(d, n * h), get(a.k_proj, i).reshape(d, k * h),
                               get(a.v_proj, i).reshape(d, k * h)], axis=1).T
        layer = {
            "input_norm": norm(blk.input_norm.scale, i),
            "post_attn_norm": norm(blk.post_attn_norm.scale, i),
            "qkv": qkv,  # [(N + 2K) * H, D]
            "o": get(a.o_proj, i).reshape(n * h, d).T,  # [D, N * H]
            "gate_up": jnp.concatenate([get(m.gate_proj, i), get(m.up_proj, i)], axis=1).T,  # [2F, D]
            "down": get(m.down_proj, i).T,  # [D, F]
        }
        if c.qkv_bias:
            layer["qkv_bias"] = jnp.concatenate([get(a.q_bias, i).reshape(-1), get(a.k_bias, i).reshape(-1),
                                                 get(a.v_bias, i).reshape(-1)])
        if c.o_bias:
            layer["o_bias"] = get(a.o_bias, i)
        if c.qk_norm:
            layer["q_norm"], layer["k_norm"] = norm(a.q_norm.scale, i), norm(a.k_norm.scale, i)
        if c.mlp_bias:
            layer["gate_up_bias"] = jnp.concatenate([get(m.gate_bias, i), get(m.up_bias, i)])
            layer["down_bias"] = get(m.down_bias, i)
        layers.append(layer)
    embed = model.embed.get_value().astype(wd)
    head = embed if c.tie_embeddings else model.lm_head.get_value().T.astype(wd)
    return DecodeWeights(embed=embed, head=head, final_norm=model.final_norm.scale.get_value(),
                         layers=tuple(layers))


def linear(x_MK: jax.Array, w_NK: jax.Array, out_dtype=None) -> jax.Array:
    """x @ w.T for a weight stored [out, in].

    With few rows (decoding) a GEMM library call packs the whole weight before using it, which
    triples the memory traffic of a step that is bound by reading weights; a fused
    multiply-reduce instead streams each weight row once and reuses it for every row of x.
    A single row (batch-1 decoding) takes its own path, see below.
    """
    m = x_MK.shape[0]
    out_dtype = out_dtype or x_MK.dtype
    if m <= SMALL_M and jax.default_backend() == "cpu":
        if m == 1 and x_MK.dtype == w_NK.dtype == out_dtype == jnp.float32:
            # A float32 matrix-vector product packs nothing; XLA's dot is the fastest path here.
            return jnp.einsum("mk,nk->mn", x_MK, w_NK, preferred_element_type=jnp.float32)
        if m == 1:
            # One row gives the reduction a unit dimension ([N, 1, K]), which XLA:CPU's YNNPACK
            # fusion runs 20-60x slower than two rows (SmolLM2-135M: 330 ms against 5 ms for the
            # output head, which also maps fresh memory on every call, 138k page faults; a whole
            # decode step 20-30x slower at batch 1 than at 2). A bfloat16 dot is 8x slower than
            # two rows too. A zero second row keeps the streaming kernel.
            return linear(jnp.concatenate([x_MK, jnp.zeros_like(x_MK)]), w_NK, out_dtype)[:1]
        # The barrier keeps XLA from fusing x's producer (silu, the attention output) into the
        # reduction, where it would be recomputed once per weight row.
        x_MK = jax.lax.optimization_barrier(x_MK)
        prod = w_NK[:, None, :].astype(jnp.float32) * x_MK[None, :, :].astype(jnp.float32)
        return jnp.sum(prod, axis=-1).T.astype(out_dtype)
    return jnp.einsum("mk,nk->mn", x_MK, w_NK, preferred_element_type=out_dtype)


def attention_spans(size: int, smallest: int = SMALLEST_SPAN) -> tuple[int, ...]:
    """Static prefix lengths a chunk may attend over: doubling from `smallest`, ending at `size`."""
    spans = []
    span = smallest
    while span < size:
        spans.append(span)
        span *= 2
    return (*spans, size)


def _cached_attention(q_BTNH, k_BKHS, v_BKSH, mask_BTS, spans, which):
    """Attention of a chunk over the first `spans[which]` slots of the cache (the rest are empty).

    Slots are written front to back, so a step only needs the used prefix: `decode_forward` picks
    the smallest static span that covers it (`attention_spans`) once per call, and each layer's
    `lax.switch` reads that much of its cache instead of all of it. Long chunks on one CPU go row
    by row.
    """
    b, t = q_BTNH.shape[:2]
    row_by_row = t > 1 and b > 1 and jax.default_backend() == "cpu" and current_mesh() is None

    def over(span):
        def attend(q, k, v, mask):
            k, v, mask = k[..., :span], v[:, :, :span], mask[..., :span]
            if row_by_row:
                return jax.lax.map(lambda a: attention(*(x[None] for x in a), keys_transposed=True)[0],
                                   (q, k, v, mask))
            return attention(q, k, v, mask, keys_transposed=True)
        return attend

    if len(spans) == 1:
        return over(spans[0])(q_BTNH, k_BKHS, v_BKSH, mask_BTS)
    return jax.lax.switch(which, [over(s) for s in spans], q_BTNH, k_BKHS, v_BKSH, mask_BTS)


def layer_qkv(c: ModelConfig, w: dict, x_BTD, positions_BT):
    """A layer's queries [B, T, N, H] and rotated keys / values [B, T, K, H] (decode layout `w`)."""
    b, t, d = x_BTD.shape
    n, kh, h = c.num_heads, c.num_kv_heads, c.head_dim
    cd = x_BTD.dtype
    y = rms_norm(x_BTD, w["input_norm"], c.rms_norm_eps).reshape(b * t, d)
    qkv = linear(y, w["qkv"].astype(cd))  # no-ops: `prepare_decode_weights` stores them in cd
    if c.qkv_bias:
        qkv = qkv + w["qkv_bias"].astype(cd)
    q = qkv[:, :n * h].reshape(b, t, n, h)
    k = qkv[:, n * h:(n + kh) * h].reshape(b, t, kh, h)
    v = qkv[:, (n + kh) * h:].reshape(b, t, kh, h)
    if c.qk_norm:
        q, k = rms_norm(q, w["q_norm"], c.rms_norm_eps), rms_norm(k, w["k_norm"], c.rms_norm_eps)
    inv_freq, scale = rope_inv_freq(c), rope_attention_factor(c)
    return apply_rope(q, positions_BT, inv_freq, scale), apply_rope(k, positions_BT, inv_freq, scale), v


def layer_out(c: ModelConfig, w: dict, x_BTD, attn_BTNH):
    """The rest of a layer after attention: output projection, residual, MLP, residual."""
    b, t, d = x_BTD.shape
    cd = x_BTD.dtype
    out = linear(attn_BTNH.reshape(b * t, -1), w["o"].astype(cd))
    if c.o_bias:
        out = out + w["o_bias"].astype(cd)
    x = x_BTD + out.reshape(b, t, d)
    y = rms_norm(x, w["post_attn_norm"], c.rms_norm_eps).reshape(b * t, d)
    gate_up = linear(y, w["gate_up"].astype(cd))
    if c.mlp_bias:
        gate_up = gate_up + w["gate_up_bias"].astype(cd)
    f = c.intermediate_size
    hidden = jax.nn.silu(gate_up[:, :f]) * gate_up[:, f:]
    out = linear(hidden, w["down"].astype(cd))
    if c.mlp_bias:
        out = out + w["down_bias"].astype(cd)
    return x + out.reshape(b, t, d)


def _layer(c: ModelConfig, w: dict, x_BTD, positions_BT, mask_BTS, k_cache, v_cache, write_index, spans,
           which):
    cd = x_BTD.dtype
    q, k, v = layer_qkv(c, w, x_BTD, positions_BT)
    k, v = k.transpose(0, 2, 3, 1), v.transpose(0, 2, 1, 3)  # [B, K, H, T], [B, K, T, H]
    k_cache = jax.lax.dynamic_update_slice(k_cache, k.astype(k_cache.dtype), (0, 0, 0, write_index))
    v_cache = jax.lax.dynamic_update_slice(v_cache, v.astype(v_cache.dtype), (0, 0, write_index, 0))
    out = _cached_attention(q, k_cache.astype(cd), v_cache.astype(cd), mask_BTS, spans, which)
    return layer_out(c, w, x_BTD, out), k_cache, v_cache


def decode_forward(config: ModelConfig, weights: DecodeWeights, input_ids_BC, cache: KVCache, *,
                   attention_mask_BC, positions_BC) -> tuple[jax.Array, KVCache]:
    """Writes a chunk [B, C] into the cache at `cache.index`; returns (logits [B, C, V] f32, cache).

    The chunk attends to every earlier real slot of its row and causally within itself.
    """
    c = config
    cd = jnp.dtype(c.dtype)
    b, t = input_ids_BC.shape
    write_index = cache.index
    valid = attention_mask_BC.astype(bool)
    new_mask = jax.lax.dynamic_update_slice(cache.mask, valid, (0, write_index))
    slots = jnp.arange(cache.size)
    causal = slots[None, :] <= (write_index + jnp.arange(t))[:, None]
    mask = causal[None] & new_mask[:, None, :]
    spans = attention_spans(cache.size) if current_mesh() is None else (cache.size,)
    which = jnp.searchsorted(jnp.asarray(spans), write_index + t)  # smallest span covering the used slots
    x = jnp.take(weights.embed, input_ids_BC, axis=0).astype(cd)
    ks, vs = [], []
    for i, w in enumerate(weights.layers):
        x, k, v = _layer(c, w, x, positions_BC, mask, cache.k[i], cache.v[i], write_index, spans, which)
        ks.append(k)
        vs.append(v)
    h = rms_norm(x, weights.final_norm, c.rms_norm_eps).reshape(b * t, -1)
    logits = linear(h, weights.head.astype(cd), out_dtype=jnp.float32).reshape(b, t, -1)
    return logits, KVCache(k=tuple(ks), v=tuple(vs), mask=new_mask, index=write_index + t)


def forward_cached(model: Transformer, input_ids, cache: KVCache, *, attention_mask=None,
                   positions=None) -> tuple[jax.Array, KVCache]:
    """Appends a chunk of tokens [B, C] to `cache`; returns (logits [B, C, V], new cache).

    Positions must be given explicitly when continuing a cache (default: 0..C-1 counting real
    tokens, right for a prefill into an empty cache). Prepares the decode layout on every call;
    loops should call `prepare_decode_weights` once and use `decode_forward`.
    """
    ids, mask, pos = prepare_inputs(input_ids, attention_mask, positions)
    return decode_forward(model.config, prepare_decode_weights(model), ids, cache,
                          attention_mask_BC=mask, positions_BC=pos)


def jit_forward_cached(model: Transformer, input_ids, cache: KVCache, *, attention_mask=None,
                       positions=None) -> tuple[jax.Array, KVCache]:
    """`forward_cached` compiled once per (model structure, shapes)."""
    graphdef, state = nnx.split(model)
    ids, mask, pos = prepare_inputs(input_ids, attention_mask, positions)
    return _jit_cached(graphdef, state, ids, mask, pos, cache)


@functools.partial(jax.jit, static_argnums=0)
def _jit_cached(graphdef, state, ids, mask, pos, cache):
    return forward_cached(nnx.merge(graphdef, state), ids, cache, attention_mask=mask, positions=pos)
