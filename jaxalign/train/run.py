"""Placing a train state on a mesh and compiling a step with explicit shardings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxalign import sharding
from jaxalign.sharding import Rules


def tree_shardings(tree: Any, mesh: Mesh, rules: Rules) -> Any:
    """NamedShardings for a pytree: Variables by their logical axes, everything else replicated.

    Works for a TrainState: the optimizer's moment pytrees mirror the parameters' Variables (with
    their axes), so they shard exactly like the parameters (FSDP shards optimizer state too).
    """
    replicated = NamedSharding(mesh, PartitionSpec())

    def one(x):
        if isinstance(x, nnx.Variable):
            spec = sharding.logical_to_spec(sharding._axes_of(x), rules, x.get_value().shape, mesh)
            return x.replace(NamedSharding(mesh, spec))
        return replicated

    return jax.tree.map(one, tree, is_leaf=lambda x: isinstance(x, nnx.Variable))


def batch_sharding(mesh: Mesh, rules: Rules, ndim: int, batch_axis: int) -> NamedSharding:
    """A batch leaf of rank `ndim` whose axis `batch_axis` is the batch: split over the data axes."""
    axes = [None] * ndim
    axes[batch_axis] = "batch"
    return NamedSharding(mesh, sharding.logical_to_spec(axes, rules))


def compile_step(step: Callable, state: Any, mesh: Mesh, rules: Rules, *, batch_axis: int = 1,
                 donate: bool = True) -> tuple[Callable, Any]:
    """Places `state` on `mesh` and jits `step(state, batch) -> (state, metrics)` with explicit
    state shardings and the activation-constraint context active while tracing.

    Batch leaves (of a dict or a struct dataclass such as `GRPOBatch`) are placed with their axis
    `batch_axis` (1 for SFT's [A, B, T], 0 for GRPO's [B, T]) split over ("data", "fsdp"). On
    several processes each passes only its own rows (`jaxalign.distributed.batch_rows`). Returns
    (compiled step, placed state).
    """
    state_sh = tree_shardings(state, mesh, rules)
    # A copy, never an alias: the step donates its state, which must not delete the caller's arrays
    # (e.g. the parameters a reference model or a sampler still holds).
    placed = jax.device_put(state, state_sh, may_alias=False)

    def traced(s, batch):
        with sharding.use_mesh(mesh, rules):
            return step(s, batch)

    jitted = jax.jit(traced, in_shardings=(state_sh, None), out_shardings=(state_sh, None),
                     donate_argnums=(0,) if donate else ())

    def place(v):
        if isinstance(v, jax.Array) and not v.is_fully_addressable:
            return v  # already a global array (e.g. a previous jitted output)
        sh = batch_sharding(mesh, rules, np.ndim(v), batch_axis)
        if jax.process_count() == 1:
            return jax.device_put(v, sh)
        # Multi-host: `v` holds this process's rows only (see distributed.batch_rows).
        return jax.make_array_from_process_local_data(sh, np.asarray(v))

    def run(s, batch):
        # any pytree of arrays (a dict, a struct dataclass); None fields are empty subtrees, left as None
        return jitted(s, jax.tree.map(place, batch))

    return run, placed
