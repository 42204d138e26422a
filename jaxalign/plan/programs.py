"""Per-device memory of the programs a GRPO step runs besides its train step.

The log-prob pass (old / reference log-probs, `compile_logprob_pass`) on the training mesh, and the
rollout's programs on a host's rollout mesh, exactly as the trainer and the `Sampler` compile them:
the decode-layout preparation of the weights, the prompt prefill, a tool-output append and the
decode loop (`sampling.loop.MeshLoop`). Every input is abstract (shapes and shardings only), so
nothing is allocated; each figure is the compiled program's own memory analysis, arguments +
outputs - donated aliases + temporaries, per device.

As in `memory.estimate`, a deep model is measured through two shallow proxies of the same width
and extrapolated linearly in depth: every layer adds the same weights, cache and temporaries.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh

from jaxalign import models, sharding
from jaxalign.models import ModelConfig
from jaxalign.sampling import loop
from jaxalign.sampling.functional import SamplingConfig
from jaxalign.sampling.sampler import StopTable, prepare_weights
from jaxalign.train.logprobs import compile_logprob_pass


def peak_bytes(compiled) -> int:
    """Arguments + outputs - donated aliases + temporaries of a compiled program, per device."""
    m = compiled.memory_analysis()
    return int(m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes)


def in_depth(measure: Callable[[ModelConfig], dict], config: ModelConfig,
             proxy_layers: tuple[int, int] = (2, 3)) -> dict:
    """`measure(config)` (a dict of byte counts) for a deep config, from two shallow proxies."""
    a, b = proxy_layers
    if config.num_layers <= b:
        return measure(config)
    lo = measure(dataclasses.replace(config, num_layers=a))
    hi = measure(dataclasses.replace(config, num_layers=b))
    return {k: hi[k] + (config.num_layers - b) * (hi[k] - lo[k]) // (b - a) for k in hi}


def _abstract(tree, shardings):
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def logprob_pass_bytes(config: ModelConfig, mesh: Mesh, rows: int, seq_len: int, micro_batch: int | None) -> dict:
    """{"logprob_pass": peak}: the compiled log-prob pass over `rows` x `seq_len` tokens."""

    def measure(c: ModelConfig) -> dict:
        graphdef, params = nnx.split(models.abstract_model(c))
        fn = compile_logprob_pass(graphdef, params, mesh, sharding.TRAIN_RULES, micro_batch=micro_batch)
        batch = {k: jax.ShapeDtypeStruct((rows, seq_len), jnp.int32)
                 for k in ("input_ids", "attention_mask", "positions")}
        return {"logprob_pass": peak_bytes(fn.lower(params, batch).compile())}

    return in_depth(measure, config)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RolloutShape:
    """The rollout one host runs: all its trajectories at once, in one cache (`RolloutEngine.run`)."""

    rows: int
    cache_size: int
    prompt_len: int
    append_len: int
    """Widest tool-output chunk appended at once (the engine pads appends to the widest)."""
    max_tokens: int
    """Segment buffer: most tokens generated between two host checks."""
    window: int = 8


def rollout_bytes(config: ModelConfig, mesh: Mesh, shape: RolloutShape,
                  rules: sharding.Rules = sharding.ROLLOUT_RULES) -> dict:
    """Per-device peaks of the sampler's programs on `mesh`: `weights` (the decode layout, resident
    while the sampler lives), `prepare`, `prefill`, `append` and `decode` (each with its weights and
    decode state), and `kv_cache` (the cache of the decode state)."""

    def measure(c: ModelConfig) -> dict:
        mesh_loop = loop.MeshLoop(c, mesh, rules)
        graphdef, params = nnx.split(models.abstract_model(c))
        params = _abstract(params, sharding.tree_shardings(params, mesh, rules))
        prepare = prepare_weights.lower(graphdef, params).compile()
        weights = _abstract(jax.eval_shape(prepare_weights, graphdef, params), prepare.output_shardings)
        rows2 = mesh_loop.rows
        ids = jax.ShapeDtypeStruct((shape.rows, shape.prompt_len), jnp.int32, sharding=rows2)
        rng = jax.ShapeDtypeStruct((), jax.eval_shape(lambda: jax.random.key(0)).dtype,
                                   sharding=mesh_loop.replicated)
        statics = (shape.cache_size, shape.max_tokens, shape.window)
        prefill = mesh_loop._prefill.lower(weights, ids, ids, rng, *statics).compile()
        state = _abstract(jax.eval_shape(lambda w, i, r: loop._prefill(
            c, w, i, i, r, cache_size=shape.cache_size, max_tokens=shape.max_tokens, window=shape.window),
            weights, ids, rng), mesh_loop.shardings)
        chunk = jax.ShapeDtypeStruct((shape.rows, shape.append_len), jnp.int32, sharding=rows2)
        append = mesh_loop._append.lower(weights, state, chunk, chunk).compile()
        stops = StopTable.build((0,), (), shape.window)
        rep = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=mesh_loop.replicated)  # noqa: E731
        decode = mesh_loop._decode.lower(weights, state, rep(stops.ids), rep(stops.seqs), rep(stops.lens),
                                         jax.ShapeDtypeStruct((), jnp.int32, sharding=mesh_loop.replicated),
                                         SamplingConfig(), 0).compile()
        cache = state.cache.k + state.cache.v
        kv = sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize for x in cache)
        return {"weights": int(prepare.memory_analysis().output_size_in_bytes), "prepare": peak_bytes(prepare),
                "prefill": peak_bytes(prefill), "append": peak_bytes(append), "decode": peak_bytes(decode),
                "kv_cache": int(kv)}

    return in_depth(measure, config)
