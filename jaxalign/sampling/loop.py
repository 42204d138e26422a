"""The jitted decode loop: a fixed-size state pytree advanced by `lax.while_loop`.

All functions here are pure and take the model as (config, decode-layout weights) so they jit
once per shape bucket; the host-side `Sampler` drives them. Rows advance together but stop independently (EOS,
stop sequence, per-row token budget, cache full); a stopped row can later receive appended tokens
(a tool output) and resume without recomputing its prefix.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import struct

from jaxalign.models.config import ModelConfig
from jaxalign.models.decode import DecodeWeights, KVCache, decode_forward, init_cache
from jaxalign.sampling.functional import SamplingConfig, sample, stop_sequence_hit

RUNNING, EOS, STOP_SEQUENCE, BUDGET, CACHE_FULL = 0, 1, 2, 3, 4
STOP_NAMES = ("running", "eos", "stop_sequence", "budget", "cache_full")


@struct.dataclass
class DecodeState:
    """Everything the decode loop carries; shapes fixed by (B, S, M, W)."""

    cache: KVCache
    logits: jax.Array  # [B, V] float32: next-token logits of each row
    next_pos: jax.Array  # [B] int32: position of each row's next token
    tokens: jax.Array  # [B, M] int32: tokens generated in the current segment
    logprobs: jax.Array  # [B, M] float32: their log-probs under the sampling distribution
    length: jax.Array  # [B] int32: tokens generated in the current segment
    budget: jax.Array  # [B] int32: most tokens the current segment may generate
    active: jax.Array  # [B] bool: row is generating
    stop_reason: jax.Array  # [B] int32: one of RUNNING, EOS, STOP_SEQUENCE, BUDGET, CACHE_FULL
    recent: jax.Array  # [B, W] int32: last W generated tokens (for stop sequences), -1 filled
    rng: jax.Array  # PRNG key


def _append(config: ModelConfig, weights: DecodeWeights, state: DecodeState, ids_BC, mask_BC) -> DecodeState:
    """Writes a chunk (prompt or tool output) into the cache; rows with no real token unchanged."""
    mask = mask_BC.astype(bool)
    positions = state.next_pos[:, None] + jnp.cumsum(mask, axis=-1, dtype=jnp.int32) - 1
    logits, cache = decode_forward(config, weights, ids_BC, state.cache, attention_mask_BC=mask,
                                   positions_BC=jnp.maximum(positions, 0))
    count = mask.sum(-1, dtype=jnp.int32)
    has = count > 0
    last = ids_BC.shape[1] - 1 - jnp.argmax(mask[:, ::-1], axis=-1)  # last real column
    last_logits = jnp.take_along_axis(logits, last[:, None, None], axis=1)[:, 0]
    return state.replace(
        cache=cache,
        logits=jnp.where(has[:, None], last_logits, state.logits),
        next_pos=state.next_pos + count,
        recent=jnp.where(has[:, None], -1, state.recent),
    )


@functools.partial(jax.jit, static_argnames=("config", "cache_size", "max_tokens", "window"))
def prefill(config: ModelConfig, weights: DecodeWeights, ids_BC, mask_BC, rng, *, cache_size: int,
            max_tokens: int, window: int) -> DecodeState:
    """A fresh state with the prompts [B, C] (left- or right-padded, `mask` 1 on real tokens)."""
    b = ids_BC.shape[0]
    cache = init_cache(config, b, cache_size)
    state = DecodeState(
        cache=cache,
        logits=jnp.zeros((b, config.vocab_size), jnp.float32),
        next_pos=jnp.zeros((b,), jnp.int32),
        tokens=jnp.zeros((b, max_tokens), jnp.int32),
        logprobs=jnp.zeros((b, max_tokens), jnp.float32),
        length=jnp.zeros((b,), jnp.int32),
        budget=jnp.zeros((b,), jnp.int32),
        active=jnp.zeros((b,), bool),
        stop_reason=jnp.zeros((b,), jnp.int32),
        recent=jnp.full((b, window), -1, jnp.int32),
        rng=rng,
    )
    return _append(config, weights, state, ids_BC, mask_BC)


@functools.partial(jax.jit, static_argnames=("config",), donate_argnames=("state",))
def append(config: ModelConfig, weights: DecodeWeights, state: DecodeState, ids_BC, mask_BC) -> DecodeState:
    """Appends a chunk [B, C] to rows whose mask has real tokens (a tool output, a new turn)."""
    return _append(config, weights, state, ids_BC, mask_BC)


@functools.partial(jax.jit, donate_argnames=("state",))
def start_segment(state: DecodeState, rows_B, budget_B) -> DecodeState:
    """Marks `rows` active for a new segment of at most `budget` tokens (their buffers reset)."""
    rows = rows_B.astype(bool)
    return state.replace(
        length=jnp.where(rows, 0, state.length),
        budget=jnp.where(rows, budget_B, state.budget),
        active=state.active | rows,
        stop_reason=jnp.where(rows, RUNNING, state.stop_reason),
    )


@functools.partial(jax.jit, static_argnames=("config", "sampling", "pad_id"), donate_argnames=("state",))
def decode(config: ModelConfig, weights: DecodeWeights, state: DecodeState, stop_ids, stop_seqs_SW,
           stop_lens_S, max_steps, *, sampling: SamplingConfig, pad_id: int = 0) -> DecodeState:
    """Generates for active rows until each stops or `max_steps` steps have run.

    A stopping token is still fed to the model, so its key/value sit in the cache and the row can
    be continued (e.g. after `</tool_call>` the tool output is appended behind it).
    """
    b, m = state.tokens.shape
    size = state.cache.size

    def cond(carry):
        state, step = carry
        return jnp.any(state.active) & (step < max_steps)

    def body(carry):
        state, step = carry
        rng, key = jax.random.split(state.rng)
        tok, lp = sample(state.logits, key, sampling)
        act = state.active
        tok = jnp.where(act, tok, pad_id)
        at = act[:, None] & (jnp.arange(m)[None, :] == state.length[:, None])
        tokens = jnp.where(at, tok[:, None], state.tokens)
        logprobs = jnp.where(at, lp[:, None], state.logprobs)
        length = state.length + act
        recent = jnp.where(act[:, None],
                           jnp.concatenate([state.recent[:, 1:], tok[:, None]], axis=1), state.recent)
        reason = jnp.select(
            [jnp.isin(tok, stop_ids), stop_sequence_hit(recent, stop_seqs_SW, stop_lens_S),
             length >= jnp.minimum(state.budget, m), state.cache.index + 1 >= size],
            [EOS, STOP_SEQUENCE, BUDGET, CACHE_FULL], RUNNING)
        stopping = act & (reason != RUNNING)
        logits, cache = decode_forward(config, weights, tok[:, None], state.cache,
                                       attention_mask_BC=act[:, None], positions_BC=state.next_pos[:, None])
        new = state.replace(
            cache=cache,
            logits=jnp.where(act[:, None], logits[:, 0], state.logits),
            next_pos=state.next_pos + act,
            tokens=tokens,
            logprobs=logprobs,
            length=length,
            active=act & ~stopping,
            stop_reason=jnp.where(stopping, reason, state.stop_reason),
            recent=recent,
            rng=rng,
        )
        return new, step + 1

    state, _ = jax.lax.while_loop(cond, body, (state, jnp.zeros((), jnp.int32)))
    return state


@functools.partial(jax.jit, donate_argnames=("state",))
def stop_rows(state: DecodeState, rows_B) -> DecodeState:
    """Deactivates `rows` (the host found a tool call in their text) with reason STOP_SEQUENCE."""
    rows = rows_B.astype(bool) & state.active
    return state.replace(active=state.active & ~rows,
                         stop_reason=jnp.where(rows, STOP_SEQUENCE, state.stop_reason))


@functools.partial(jax.jit, donate_argnames=("state",))
def rollback(state: DecodeState, drop_B) -> DecodeState:
    """Forgets each row's last `drop[b]` tokens: their cache slots become holes.

    Used when a row generated past the end of a tool call before the host noticed. The row's
    next-token logits are stale afterwards, so it must receive an `append` before decoding.
    """
    mask = state.cache.mask
    at_or_after = jnp.cumsum(mask[:, ::-1], axis=1, dtype=jnp.int32)[:, ::-1]
    keep = mask & (at_or_after > drop_B[:, None])
    return state.replace(cache=state.cache.replace(mask=keep), next_pos=state.next_pos - drop_B)


@functools.partial(jax.jit, donate_argnames=("state",))
def compact(state: DecodeState) -> DecodeState:
    """Moves every row's real cache slots to the front (order kept) and rewinds the write index.

    Rows of a batch write slots in lockstep, so pauses, rollbacks and padded appends leave holes;
    positions are explicit (rotary is applied before caching), so packing the real slots changes
    nothing for attention and frees the holes for reuse.
    """
    cache = state.cache
    order = jnp.argsort(~cache.mask, axis=1, stable=True)  # [B, S]: real slots first
    k = tuple(jnp.take_along_axis(x, order[:, None, None, :], axis=3) for x in cache.k)
    v = tuple(jnp.take_along_axis(x, order[:, None, :, None], axis=2) for x in cache.v)
    mask = jnp.take_along_axis(cache.mask, order, axis=1)
    index = jnp.max(jnp.sum(cache.mask, axis=1, dtype=jnp.int32))
    return state.replace(cache=KVCache(k=k, v=v, mask=mask, index=index))
