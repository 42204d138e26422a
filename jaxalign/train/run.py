"""Placing a train state on a mesh and compiling a step with explicit shardings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
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


def batch_sharding(mesh: Mesh, rules: Rules, ndim: int = 3) -> NamedSharding:
    """[A, B, T] (or [B, T] with ndim=2) batches: B split over the data axes."""
    axes = ((None,) if ndim == 3 else ()) + ("batch", "length")
    return NamedSharding(mesh, sharding.logical_to_spec(axes, rules))


def compile_step(step: Callable, state: Any, mesh: Mesh, rules: Rules, *, batch_ndim: int = 3,
                 donate: bool = True) -> tuple[Callable, Any]:
    """Places `state` on `mesh` and jits `step(state, batch) -> (state, metrics)` with explicit
    in/out shardings and the activation-constraint context active while tracing.

    Returns (compiled step, placed state).
    """
    state_sh = tree_shardings(state, mesh, rules)
    # A copy, never an alias: the step donates its state, which must not delete the caller's arrays
    # (e.g. the parameters a reference model or a sampler still holds).
    placed = jax.device_put(state, state_sh, may_alias=False)
    batch_sh = batch_sharding(mesh, rules, batch_ndim)

    def traced(s, batch):
        with sharding.use_mesh(mesh, rules):
            return step(s, batch)

    jitted = jax.jit(traced, in_shardings=(state_sh, batch_sh), out_shardings=(state_sh, None),
                     donate_argnums=(0,) if donate else ())
    return jitted, placed
