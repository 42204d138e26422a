"""The decoder-only transformer (Llama / Qwen2 / Qwen3) and its KV cache.

Layers are stored stacked (every block parameter has a leading "layers" axis) and applied with
`lax.scan`: compile time stays flat in depth, which matters for 36-layer models on TPU.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxalign.errors import InputError
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

    def __call__(self, x_BTD, positions_BT, segment_ids_BT):
        x = x_BTD + self.attn(self.input_norm(x_BTD), positions_BT, segment_ids_BT).astype(x_BTD.dtype)
        x = x + self.mlp(self.post_attn_norm(x)).astype(x.dtype)
        return constrain(x, ("batch", "length", "act_embed"))


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

    def hidden_states(self, input_ids_BT, positions_BT, attention_mask_BT, segment_ids_BT=None):
        """Final-normed hidden states [B, T, D].

        Token t attends to tokens s <= t that are real (and, when `segment_ids` is given, in the
        same segment: packed sequences). Layers run under `lax.scan` over the stacked weights.
        Cached, incremental decoding lives in `jaxalign.models.decode`.
        """
        c = self.config
        t, limit = input_ids_BT.shape[1], c.rope_scaling.context_limit(c.max_position_embeddings)
        if t > limit:
            raise ValueError(f"{t} tokens exceed the model's context of {limit} (max_position_embeddings "
                             f"{c.max_position_embeddings}, rope {c.rope_scaling.type}): set rope scaling "
                             "(e.g. yarn) in the model config instead of extrapolating")
        # Padding and packing travel as segment ids (0 = padding), never as a [B, T, T] mask.
        valid = attention_mask_BT.astype(bool)
        ids = jnp.ones(valid.shape, jnp.int32) if segment_ids_BT is None else segment_ids_BT.astype(jnp.int32)
        ids = jnp.where(valid, ids + 1, 0)  # shifted: a caller's id 0 on real tokens stays distinct
        # FSDP shards the table's embed axis like the batch; gathering rows of it straight into a
        # batch-sharded output makes XLA replicate the whole table. All-gather it over fsdp first,
        # as FSDP does for every weight (the vocab axis stays tensor-parallel).
        table = constrain(self.embed.get_value(), ("vocab", "act_embed"))
        x = jnp.take(table, input_ids_BT, axis=0).astype(jnp.dtype(c.dtype))
        x = constrain(x, ("batch", "length", "act_embed"))
        graphdef, layer_state = nnx.split(self.layers)

        def body(x, state):
            return nnx.merge(graphdef, state)(x, positions_BT, ids), None

        if c.remat == "full":
            body = jax.checkpoint(body)
        elif c.remat == "dots":
            body = jax.checkpoint(body, policy=jax.checkpoint_policies.dots_with_no_batch_dims_saveable)
        x, _ = jax.lax.scan(body, x, layer_state)
        return self.final_norm(x)

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

    def __call__(self, input_ids_BT, positions_BT, attention_mask_BT, segment_ids_BT=None):
        """float32 logits [B, T, V]."""
        return self.logits(self.hidden_states(input_ids_BT, positions_BT, attention_mask_BT, segment_ids_BT))


def prepare_inputs(input_ids, attention_mask, positions):
    """int32 ids, the mask (default all real) and positions (default counting real tokens)."""
    input_ids = jnp.asarray(input_ids, jnp.int32)
    if attention_mask is None:
        attention_mask = jnp.ones(input_ids.shape, jnp.int32)
    attention_mask = jnp.asarray(attention_mask)
    if positions is None:
        positions = default_positions(attention_mask)
    return input_ids, attention_mask, jnp.asarray(positions, jnp.int32)


def check_token_ids(input_ids, vocab_size: int, what: str = "input_ids") -> None:
    """Host-side check that every id indexes the embedding table (raises `InputError` naming the first bad one).

    Under jit an out-of-range id is not an error: the gather fills NaN and the logits turn NaN, so
    public host entry points check their concrete inputs here first.
    """
    ids = np.asarray(input_ids)
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        bad = np.argwhere((ids < 0) | (ids >= vocab_size))[0]
        raise InputError(f"{what}{list(bad.tolist())} = {int(ids[tuple(bad)])} is outside the model's vocabulary "
                         f"[0, {vocab_size}): was it made by another model's tokenizer?")


def forward(model: Transformer, input_ids, *, attention_mask=None, positions=None,
            segment_ids=None) -> jax.Array:
    """float32 logits [B, T, V] for int32 `input_ids` [B, T].

    `attention_mask` [B, T] is 1 for real tokens (default all ones); `positions` default to the
    running count of real tokens, so left- and right-padded batches agree on the real tokens.
    Traceable: call it under `jax.jit` (see `jit_forward`) or `nnx.jit`.
    """
    ids, mask, pos = prepare_inputs(input_ids, attention_mask, positions)
    return model(ids, pos, mask, segment_ids)


@functools.lru_cache(maxsize=32)
def _jitted_forward(graphdef):
    return jax.jit(lambda state, ids, mask, pos: forward(nnx.merge(graphdef, state), ids,
                                                          attention_mask=mask, positions=pos))


def jit_forward(model: Transformer, input_ids, *, attention_mask=None, positions=None) -> jax.Array:
    """`forward` compiled once per (model structure, shapes): the fast path for scoring.

    Token ids are checked against the vocabulary first (`check_token_ids`)."""
    check_token_ids(input_ids, model.config.vocab_size)
    graphdef, state = nnx.split(model)
    ids, mask, pos = prepare_inputs(input_ids, attention_mask, positions)
    return _jitted_forward(graphdef)(state, ids, mask, pos)


def abstract_model(config: ModelConfig) -> Transformer:
    """The model with ShapeDtypeStruct leaves: shapes and axes without allocating memory."""
    return nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(0)))


def init_model(config: ModelConfig, seed: int = 0) -> Transformer:
    """A randomly initialised model (jitted init)."""
    graphdef = nnx.graphdef(abstract_model(config))
    state = jax.jit(lambda: nnx.state(Transformer(config, rngs=nnx.Rngs(seed))))()
    return nnx.merge(graphdef, state)


def replace_config(model: Transformer, **changes) -> Transformer:
    """The same parameters under a config with `changes` (e.g. dtype="bfloat16" compute); a change
    given as None keeps the model's setting."""
    changes = {name: value for name, value in changes.items() if value is not None}
    if all(getattr(model.config, name) == value for name, value in changes.items()):
        return model
    config = dataclasses.replace(model.config, **changes)
    graphdef = nnx.graphdef(abstract_model(config))
    return nnx.merge(graphdef, nnx.state(model))
