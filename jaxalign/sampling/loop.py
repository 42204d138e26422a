"""The jitted decode loop: a fixed-size state pytree advanced by `lax.while_loop`.

All functions here are pure and take the model as (config, decode-layout weights) so they jit
once per shape bucket; the host-side `Sampler` drives them. Rows advance together but stop independently (EOS,
stop sequence, per-row token budget, cache full); a stopped row can later receive appended tokens
(a tool output) and resume without recomputing its prefix.

The module-level functions (`prefill`, `decode`, ...) leave placement to JAX: one device. `MeshLoop`
jits the same functions for a mesh with every placement stated (`state_shardings`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxalign import sharding
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


def _write(config: ModelConfig, weights: DecodeWeights, state: DecodeState, ids_BC, mask_BC) -> DecodeState:
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


def _prefill(config: ModelConfig, weights: DecodeWeights, ids_BC, mask_BC, rng, *, cache_size: int,
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
    return _write(config, weights, state, ids_BC, mask_BC)


def _append(config: ModelConfig, weights: DecodeWeights, state: DecodeState, ids_BC, mask_BC) -> DecodeState:
    """Appends a chunk [B, C] to rows whose mask has real tokens (a tool output, a new turn)."""
    return _write(config, weights, state, ids_BC, mask_BC)


def _start_segment(state: DecodeState, rows_B, budget_B) -> DecodeState:
    """Marks `rows` active for a new segment of at most `budget` tokens (their buffers reset)."""
    rows = rows_B.astype(bool)
    return state.replace(
        length=jnp.where(rows, 0, state.length),
        budget=jnp.where(rows, budget_B, state.budget),
        active=state.active | rows,
        stop_reason=jnp.where(rows, RUNNING, state.stop_reason),
    )


def _decode(config: ModelConfig, weights: DecodeWeights, state: DecodeState, stop_ids, stop_seqs_SW,
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


def _stop_rows(state: DecodeState, rows_B) -> DecodeState:
    """Deactivates `rows` (the host found a tool call in their text) with reason STOP_SEQUENCE."""
    rows = rows_B.astype(bool) & state.active
    return state.replace(active=state.active & ~rows,
                         stop_reason=jnp.where(rows, STOP_SEQUENCE, state.stop_reason))


def _rollback(state: DecodeState, drop_B) -> DecodeState:
    """Forgets each row's last `drop[b]` tokens: their cache slots become holes.

    Used when a row generated past the end of a tool call before the host noticed. The row's
    next-token logits are stale afterwards, so it must receive an `append` before decoding.
    """
    mask = state.cache.mask
    at_or_after = jnp.cumsum(mask[:, ::-1], axis=1, dtype=jnp.int32)[:, ::-1]
    keep = mask & (at_or_after > drop_B[:, None])
    return state.replace(cache=state.cache.replace(mask=keep), next_pos=state.next_pos - drop_B)


def _compact(state: DecodeState) -> DecodeState:
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


# ---------------------------------------------------------------------------- one device
prefill = jax.jit(_prefill, static_argnames=("config", "cache_size", "max_tokens", "window"))
append = jax.jit(_append, static_argnames=("config",), donate_argnames=("state",))
decode = jax.jit(_decode, static_argnames=("config", "sampling", "pad_id"), donate_argnames=("state",))
start_segment = jax.jit(_start_segment, donate_argnames=("state",))
stop_rows = jax.jit(_stop_rows, donate_argnames=("state",))
rollback = jax.jit(_rollback, donate_argnames=("state",))
compact = jax.jit(_compact, donate_argnames=("state",))


class OneDevice:
    """The module-level functions bound to one model config (placement left to JAX: one device)."""

    start_segment = staticmethod(start_segment)
    stop_rows = staticmethod(stop_rows)
    rollback = staticmethod(rollback)
    compact = staticmethod(compact)

    def __init__(self, config: ModelConfig):
        self.prefill = functools.partial(prefill, config)
        self.append = functools.partial(append, config)
        self.decode = functools.partial(decode, config)


# ---------------------------------------------------------------------------- on a mesh
def state_shardings(config: ModelConfig, mesh: Mesh, rules: sharding.Rules) -> DecodeState:
    """Where each array of a DecodeState lives on `mesh`.

    Rows (every [B, ...] array, the KV cache included) split over the rules' "batch" axes, so each
    data / fsdp device decodes only its own rows; the cache's kv-heads follow "act_kv_heads" (tensor)
    when they divide, as the attention that reads them is split by heads. Logits keep the whole
    vocabulary on each device (sampling sorts over it). The write index and the PRNG key are
    replicated. Batch sizes must be a multiple of `sharding.batch_shards(mesh, rules)`.
    """
    rows = NamedSharding(mesh, sharding.logical_to_spec(("batch", None), rules))
    # A shape stands in for the batch only to check that the kv-heads divide their mesh axis.
    kv = NamedSharding(mesh, sharding.logical_to_spec(
        ("batch", "act_kv_heads", None, None), rules, (sharding.batch_shards(mesh, rules), config.num_kv_heads, 1, 1),
        mesh))
    row = sharding.batch_sharding(mesh, rules, 1, 0)
    replicated = NamedSharding(mesh, PartitionSpec())
    layers = config.num_layers
    return DecodeState(
        cache=KVCache(k=(kv,) * layers, v=(kv,) * layers, mask=rows, index=replicated),
        logits=rows, next_pos=row, tokens=rows, logprobs=rows, length=row, budget=row, active=row,
        stop_reason=row, recent=rows, rng=replicated)


class MeshLoop:
    """The loop's functions for one model config on one mesh, each placement stated, not inferred.

    Same signatures as the module-level functions without `config`. A DecodeState goes in (checked:
    a state laid out otherwise is an error) and comes out as `state_shardings` says; host inputs
    ([B, C] chunks, [B] row masks and budgets) are put on the mesh by rows, stop tables, step counts
    and the key replicated, before each call (jit takes no numpy inputs with shardings on several
    processes); weights stay where they are (the sampler places them by the rules). Tracing runs
    under `sharding.use_mesh`, so the model code keeps its batch vectorised (no single-device CPU
    paths) and its activation constraints apply.
    """

    def __init__(self, config: ModelConfig, mesh: Mesh, rules: sharding.Rules):
        self.config, self.mesh, self.rules = config, mesh, rules
        self.shardings = st = state_shardings(config, mesh, rules)
        self.row = row = sharding.batch_sharding(mesh, rules, 1, 0)  # [B]
        self.rows = rows = sharding.batch_sharding(mesh, rules, 2, 0)  # [B, C]
        self.replicated = rep = NamedSharding(mesh, PartitionSpec())

        def jit(fn, in_shardings, static=(), donate=()):
            def traced(*args):
                with sharding.use_mesh(mesh, rules):
                    return fn(*args)

            # jit takes no keyword arguments with in_shardings: statics are positional here.
            return jax.jit(traced, in_shardings=in_shardings, out_shardings=st, static_argnums=static,
                           donate_argnums=donate)

        self._prefill = jit(lambda w, ids, mask, rng, size, m, win: _prefill(
            config, w, ids, mask, rng, cache_size=size, max_tokens=m, window=win), (None, rows, rows, rep), (4, 5, 6))
        self._append = jit(functools.partial(_append, config), (None, st, rows, rows), donate=(1,))
        self._decode = jit(lambda w, s, ids, seqs, lens, steps, sampling, pad: _decode(
            config, w, s, ids, seqs, lens, steps, sampling=sampling, pad_id=pad), (None, st, rep, rep, rep, rep),
            (6, 7), (1,))
        self._start_segment = jit(_start_segment, (st, row, row), donate=(0,))
        self._stop_rows = jit(_stop_rows, (st, row), donate=(0,))
        self._rollback = jit(_rollback, (st, row), donate=(0,))
        self._compact = jit(_compact, (st,), donate=(0,))

    def prefill(self, weights: DecodeWeights, ids_BC, mask_BC, rng, *, cache_size: int, max_tokens: int,
                window: int) -> DecodeState:
        """`prefill` on this mesh."""
        ids_BC, mask_BC, rng = jax.device_put((ids_BC, mask_BC, rng), (self.rows, self.rows, self.replicated))
        return self._prefill(weights, ids_BC, mask_BC, rng, cache_size, max_tokens, window)

    def append(self, weights: DecodeWeights, state: DecodeState, ids_BC, mask_BC) -> DecodeState:
        """`append` on this mesh."""
        return self._append(weights, state, *jax.device_put((ids_BC, mask_BC), self.rows))

    def decode(self, weights: DecodeWeights, state: DecodeState, stop_ids, stop_seqs_SW, stop_lens_S, max_steps, *,
               sampling: SamplingConfig, pad_id: int = 0) -> DecodeState:
        """`decode` on this mesh."""
        stops = jax.device_put((stop_ids, stop_seqs_SW, stop_lens_S, max_steps), self.replicated)
        return self._decode(weights, state, *stops, sampling, pad_id)

    def start_segment(self, state: DecodeState, rows_B, budget_B) -> DecodeState:
        """`start_segment` on this mesh."""
        return self._start_segment(state, *jax.device_put((rows_B, budget_B), self.row))

    def stop_rows(self, state: DecodeState, rows_B) -> DecodeState:
        """`stop_rows` on this mesh."""
        return self._stop_rows(state, jax.device_put(rows_B, self.row))

    def rollback(self, state: DecodeState, drop_B) -> DecodeState:
        """`rollback` on this mesh."""
        return self._rollback(state, jax.device_put(drop_B, self.row))

    def compact(self, state: DecodeState) -> DecodeState:
        """`compact` on this mesh."""
        return self._compact(state)

    @classmethod
    @functools.cache
    def get(cls, config: ModelConfig, mesh: Mesh, rules: sharding.Rules) -> MeshLoop:
        """One instance (so one compilation per shape) per (config, mesh, rules)."""
        return cls(config, mesh, rules)
