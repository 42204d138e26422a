"""Placing a train state on a mesh and compiling a step with explicit shardings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from jaxalign import sharding
from jaxalign.sharding import Rules


def compile_step(step: Callable, state: Any, mesh: Mesh, rules: Rules, *, batch_axis: int = 1,
                 donate: bool = True) -> tuple[Callable, Any]:
    """Places `state` on `mesh` and jits `step(state, batch) -> (state, metrics)` with explicit
    state shardings and the activation-constraint context active while tracing.

    Batch leaves (of a dict or a struct dataclass such as `GRPOBatch`) are placed with their axis
    `batch_axis` (1 for SFT's [A, B, T], 0 for GRPO's [B, T]) split over ("data", "fsdp"). On
    several processes each passes only its own rows (`jaxalign.distributed.batch_rows`). Returns
    (compiled step, placed state).
    """
    state_sh = sharding.tree_shardings(state, mesh, rules)
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
        sh = sharding.batch_sharding(mesh, rules, np.ndim(v), batch_axis)
        if jax.process_count() == 1:
            return jax.device_put(v, sh)
        # Multi-host: `v` holds this process's rows only (see distributed.batch_rows).
        return jax.make_array_from_process_local_data(sh, np.asarray(v))

    def run(s, batch):
        # any pytree of arrays (a dict, a struct dataclass); None fields are empty subtrees, left as None
        return jitted(s, jax.tree.map(place, batch))

    return run, placed


def compile_scorer(fn: Callable, params: Any, mesh: Mesh | None, rules: Rules, *, batch_axis: int = 0) -> Callable:
    """`batch -> fn(params, batch)` without gradients, compiled under `mesh` with explicit shardings.

    For scoring passes (reward models, endogenous rewards): `params` (any pytree, e.g. an nnx State
    or a tuple of them) are placed once by `rules`, batch leaves get their axis `batch_axis` split
    over the batch axes, and the model's activation constraints are active while tracing. The caller
    runs it one micro-batch at a time. `mesh=None` means one device (the first).
    """
    if mesh is None:
        mesh = sharding.make_mesh(sharding.MeshConfig(fsdp=1), devices=jax.devices()[:1])
    params_sh = sharding.tree_shardings(params, mesh, rules)
    placed = jax.device_put(params, params_sh)

    def traced(p, batch):
        with sharding.use_mesh(mesh, rules):
            return fn(p, batch)

    jitted = jax.jit(traced, in_shardings=(params_sh, None))

    def place(v):
        return jax.device_put(v, sharding.batch_sharding(mesh, rules, np.ndim(v), batch_axis))

    shards = sharding.batch_shards(mesh, rules)

    def run(batch):
        rows = {np.shape(v)[batch_axis] for v in jax.tree.leaves(batch)}
        if any(r % shards for r in rows):
            raise ValueError(f"scoring batch of {sorted(rows)} rows is not a multiple of the mesh's {shards} "
                             "batch shards: make the batch size a multiple")
        return jitted(placed, jax.tree.map(place, batch))

    run.mesh, run.params = mesh, placed
    return run
