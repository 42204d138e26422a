"""The decoder-only transformer (Llama / Qwen2 / Qwen3) and its KV cache.

Layers are stored stacked (every block parameter has a leading "layers" axis) and applied with
`lax.scan`: compile time stays flat in depth, which matters for 36-layer models on TPU.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import nnx, struct

from jaxalign.models.config import ModelConfig
from jaxalign.models.layers import MLP, Attention, RMSNorm, param
from jaxalign.sharding import constrain


class Block(nnx.Module):
    """Pre-norm residual block: x + attn(norm(x)), then + mlp(norm(x))."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        dt = jnp.dtype(config.param_dtype)
        self.input_norm = RMSNorm(config.hidden_size, config.rms_norm_eps, dtype=dt, rngs=rngs)
        self.attn = Attention(config, rngs=rngs)
        self.post_attn_norm = RMSNorm(config.hidden_size, config.rms_norm_eps, dtype=dt, rngs=rngs)
        self.mlp = MLP(config, rngs=rngs)

    def __call__(self, x_BTD, positions_BT, mask_BTS, kv=None, write_index=None):
        h, new_kv = self.attn(self.input_norm(x_BTD), positions_BT, mask_BTS, kv, write_index)
        x = x_BTD + h.astype(x_BTD.dtype)
        x = x + self.mlp(self.post_attn_norm(x)).astype(x.dtype)
        return constrain(x, ("batch", "length", "act_embed")), new_kv


def _stacked_blocks(config: ModelConfig, rngs: nnx.Rngs) -> Block:
    """One Block whose parameters carry a leading [L] axis (logical name "layers")."""
    keys = jax.random.split(rngs.params(), config.num_layers)
    graphdef = nnx.graphdef(nnx.eval_shape(lambda: Block(config, rngs=nnx.Rngs(0))))
    state = jax.vmap(lambda key: nnx.state(Block(config, rngs=nnx.Rngs(params=key))))(keys)

    def add_layer_axis(var: nnx.Variable) -> nnx.Variable:
        var = var.replace(var.get_value())
        var.set_metadata(axes=("layers",) + tuple(var.get_metadata()["axes"]))
        return var

    state = jax.tree.map(add_layer_axis, state, is_leaf=lambda x: isinstance(x, nnx.Variable))
    return nnx.merge(graphdef, state)


@struct.dataclass
class KVCache:
    """Fixed-size key/value slots shared by all rows of a batch.

    All rows write a chunk at the same slot `index`; rows differ only through `mask` (which slots
    hold real tokens) and the explicit positions the caller passes. Holes (masked slots) are
    therefore fine: a row can be paused while others decode, or receive a shorter tool output.
    """

    k: jax.Array  # [L, B, S, K, H]
    v: jax.Array  # [L, B, S, K, H]
    mask: jax.Array  # [B, S] bool: slot holds a real token
    index: jax.Array  # [] int32: next slot to write

    @property
    def size(self) -> int:
        """Number of slots S."""
        return self.k.shape[2]


def init_cache(config: ModelConfig, batch: int, size: int, dtype=None) -> KVCache:
    """An empty cache of `size` slots per row (dtype defaults to the compute dtype)."""
    dt = jnp.dtype(dtype or config.dtype)
    shape = (config.num_layers, batch, size, config.num_kv_heads, config.head_dim)
    return KVCache(k=jnp.zeros(shape, dt), v=jnp.zeros(shape, dt),
                   mask=jnp.zeros((batch, size), bool), index=jnp.zeros((), jnp.int32))


def default_positions(attention_mask_BT: jax.Array) -> jax.Array:
    """Positions counting real tokens only (left or right padding give the same positions)."""
    return jnp.maximum(jnp.cumsum(attention_mask_BT.astype(jnp.int32), axis=-1) - 1, 0)


class Transformer(nnx.Module):
    """Token embedding, L stacked blocks, final RMSNorm and output head (tied or not)."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        c = config
        dt = jnp.dtype(c.param_dtype)
        self.config = c
        self.embed = param(rngs, (c.vocab_size, c.hidden_size), ("vocab", "embed"), dt, std=0.02)
        self.layers = _stacked_blocks(c, rngs)
        self.final_norm = RMSNorm(c.hidden_size, c.rms_norm_eps, dtype=dt, rngs=rngs)
        if not c.tie_embeddings:
            self.lm_head = param(rngs, (c.hidden_size, c.vocab_size), ("embed", "vocab"), dt)

    def hidden_states(self, input_ids_BT, positions_BT, attention_mask_BT, cache=None,
                      segment_ids_BT=None):
        """Final-normed hidden states [B, T, D] and the updated cache (None without one).

        Without a cache, token t attends to tokens s <= t that are real (and, when `segment_ids`
        is given, in the same segment: packed sequences). With a cache, the T tokens are written
        at slots [index, index + T) and attend to every earlier real slot.
        """
        c = self.config
        cd = jnp.dtype(c.dtype)
        valid = attention_mask_BT.astype(bool)
        t = input_ids_BT.shape[1]
        if cache is None:
            mask = jnp.tril(jnp.ones((t, t), bool))[None] & valid[:, None, :]
            if segment_ids_BT is not None:
                mask = mask & (segment_ids_BT[:, :, None] == segment_ids_BT[:, None, :])
            new_cache_mask, write_index = None, None
        else:
            write_index = cache.index
            new_cache_mask = jax.lax.dynamic_update_slice(cache.mask, valid, (0, write_index))
            slots = jnp.arange(cache.size)
            causal = slots[None, :] <= (write_index + jnp.arange(t))[:, None]
            mask = causal[None] & new_cache_mask[:, None, :]

        x = jnp.take(self.embed.get_value(), input_ids_BT, axis=0).astype(cd)
        x = constrain(x, ("batch", "length", "act_embed"))
        graphdef, layer_state = nnx.split(self.layers)

        def body(x, layer):
            state, kv = layer
            y, new_kv = nnx.merge(graphdef, state)(x, positions_BT, mask, kv, write_index)
            return y, new_kv

        if c.remat == "full":
            body = jax.checkpoint(body)
        elif c.remat == "dots":
            body = jax.checkpoint(body, policy=jax.checkpoint_policies.dots_with_no_batch_dims_saveable)
        kv_in = None if cache is None else (cache.k, cache.v)
        x, kv_out = jax.lax.scan(body, x, (layer_state, kv_in))
        h = self.final_norm(x)
        if cache is None:
            return h, None
        new_cache = KVCache(k=kv_out[0], v=kv_out[1], mask=new_cache_mask, index=write_index + t)
        return h, new_cache

    def logits(self, h_BTD: jax.Array) -> jax.Array:
        """Output head: float32 logits [B, T, V]."""
        cd = jnp.dtype(self.config.dtype)
        if self.config.tie_embeddings:
            w = self.embed.get_value().astype(cd)
            out = jnp.einsum("btd,vd->btv", h_BTD.astype(cd), w, preferred_element_type=jnp.float32)
        else:
            w = self.lm_head.get_value().astype(cd)
            out = jnp.einsum("btd,dv->btv", h_BTD.astype(cd), w, preferred_element_type=jnp.float32)
        return constrain(out.astype(jnp.float32), ("batch", "length", "act_vocab"))

    def __call__(self, input_ids_BT, positions_BT, attention_mask_BT, cache=None, segment_ids_BT=None):
        """(logits [B, T, V] float32, updated cache)."""
        h, cache = self.hidden_states(input_ids_BT, positions_BT, attention_mask_BT, cache,
                                      segment_ids_BT)
        return self.logits(h), cache


def _prepare(input_ids, attention_mask, positions):
    input_ids = jnp.asarray(input_ids, jnp.int32)
    if attention_mask is None:
        attention_mask = jnp.ones(input_ids.shape, jnp.int32)
    attention_mask = jnp.asarray(attention_mask)
    if positions is None:
        positions = default_positions(attention_mask)
    return input_ids, attention_mask, jnp.asarray(positions, jnp.int32)


def forward(model: Transformer, input_ids, *, attention_mask=None, positions=None,
            segment_ids=None) -> jax.Array:
    """float32 logits [B, T, V] for int32 `input_ids` [B, T].

    `attention_mask` [B, T] is 1 for real tokens (default all ones); `positions` default to the
    running count of real tokens, so left- and right-padded batches agree on the real tokens.
    Traceable: call it under `jax.jit` (see `jit_forward`) or `nnx.jit`.
    """
    ids, mask, pos = _prepare(input_ids, attention_mask, positions)
    logits, _ = model(ids, pos, mask, None, segment_ids)
    return logits


def forward_cached(model: Transformer, input_ids, cache: KVCache, *, attention_mask=None,
                   positions=None) -> tuple[jax.Array, KVCache]:
    """Appends a chunk of tokens [B, C] to `cache`; returns (logits [B, C, V], new cache).

    Positions must be given explicitly when continuing a cache (default: 0..C-1 counting real
    tokens, right for a prefill into an empty cache).
    """
    ids, mask, pos = _prepare(input_ids, attention_mask, positions)
    return model(ids, pos, mask, cache)


@functools.lru_cache(maxsize=32)
def _jitted(graphdef, kind: str):
    if kind == "forward":
        def fn(state, ids, mask, pos):
            return forward(nnx.merge(graphdef, state), ids, attention_mask=mask, positions=pos)
    else:
        def fn(state, ids, mask, pos, cache):
            return forward_cached(nnx.merge(graphdef, state), ids, cache, attention_mask=mask,
                                  positions=pos)
    return jax.jit(fn)


def jit_forward(model: Transformer, input_ids, *, attention_mask=None, positions=None) -> jax.Array:
    """`forward` compiled once per (model structure, shapes): the fast path for scoring."""
    graphdef, state = nnx.split(model)
    ids, mask, pos = _prepare(input_ids, attention_mask, positions)
    return _jitted(graphdef, "forward")(state, ids, mask, pos)


def jit_forward_cached(model: Transformer, input_ids, cache: KVCache, *, attention_mask=None,
                       positions=None) -> tuple[jax.Array, KVCache]:
    """`forward_cached` compiled once per (model structure, shapes)."""
    graphdef, state = nnx.split(model)
    ids, mask, pos = _prepare(input_ids, attention_mask, positions)
    return _jitted(graphdef, "cached")(state, ids, mask, pos, cache)


def abstract_model(config: ModelConfig) -> Transformer:
    """The model with ShapeDtypeStruct leaves: shapes and axes without allocating memory."""
    return nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(0)))


def init_model(config: ModelConfig, seed: int = 0) -> Transformer:
    """A randomly initialised model (jitted init)."""
    graphdef = nnx.graphdef(abstract_model(config))
    state = jax.jit(lambda: nnx.state(Transformer(config, rngs=nnx.Rngs(seed))))()
    return nnx.merge(graphdef, state)


def replace_config(model: Transformer, **changes) -> Transformer:
    """The same parameters under a config with `changes` (e.g. dtype="bfloat16" compute)."""
    config = dataclasses.replace(model.config, **changes)
    graphdef = nnx.graphdef(abstract_model(config))
    return nnx.merge(graphdef, nnx.state(model))
