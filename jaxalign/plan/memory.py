"""Per-device memory of a training step, before renting the devices.

Two sources, both without allocating a single parameter:

* `jax.eval_shape` of the model and the train state, with the rule table's specs on the mesh: the
  exact per-device bytes of parameters, gradients and AdamW moments (`state_bytes`).
* The compiled step's own `memory_analysis()` (arguments + outputs - donated aliases + temporaries)
  on a mesh of the same shape (`compiled_bytes`). Compiling a 36-layer model is cheap (layers run
  under `lax.scan`) but its temporaries are what a user wants; `estimate` compiles two shallow
  proxies of the same width (2 and 3 layers) and extrapolates linearly in depth, which is exact up
  to XLA's buffer packing because every layer saves the same residuals.

On CPU the mesh's devices can be fake (`--xla_force_host_platform_device_count`); XLA:CPU's buffer
assignment approximates the TPU / GPU compilers', which fuse more (treat CPU figures as an upper
estimate of temporaries; run the script on the real slice for its own compiler's numbers).
"""

from __future__ import annotations

import dataclasses
import math
import types
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from jaxalign import models, sharding
from jaxalign.models import ModelConfig
from jaxalign.rl.step import GRPOLossConfig, make_grpo_step
from jaxalign.sft.step import make_sft_step
from jaxalign.train.optim import OptimConfig, decay_mask, make_optimizer
from jaxalign.train.state import init_train_state

GiB = 1024**3


@dataclasses.dataclass(frozen=True, kw_only=True)
class StepShape:
    """The batch one compiled step sees."""

    kind: Literal["sft", "grpo"] = "sft"
    rows: int = 8
    """Global rows per micro-batch (SFT) or mini-batch (GRPO)."""
    seq_len: int = 1024
    accum: int = 1
    """Micro-batches per optimizer step (the leading batch axis; `rows` is per micro-batch)."""
    kl: bool = False
    """GRPO with a reference-policy KL term (one more [B, T] input)."""


def _mesh_sizes(mesh_shape: tuple[int, int, int]):
    return types.SimpleNamespace(shape=dict(zip(sharding.MESH_AXES, mesh_shape)))


def _per_device(shape, dtype, spec, sizes) -> int:
    split = 1
    for entry in tuple(spec):
        for axis in (entry,) if isinstance(entry, str) else (entry or ()):
            split *= sizes.shape[axis]
    return math.prod(shape) * np.dtype(dtype).itemsize // split


def _tree_bytes(tree: Any, mesh_shape, rules) -> int:
    sizes = _mesh_sizes(mesh_shape)
    total = 0
    for leaf in jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, nnx.Variable)):
        if isinstance(leaf, nnx.Variable):
            value = leaf.get_value()
            spec = sharding.logical_to_spec(sharding._axes_of(leaf), rules, value.shape, sizes)
            total += _per_device(value.shape, value.dtype, spec, sizes)
        else:
            total += math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize
    return total


def abstract_state(config: ModelConfig, optim: OptimConfig = OptimConfig()):
    """(graphdef, abstract TrainState, optimizer): shapes only, nothing allocated."""
    graphdef, params = nnx.split(models.abstract_model(config))
    optimizer = make_optimizer(optim, 1000, mask=decay_mask(params))
    return graphdef, jax.eval_shape(lambda p: init_train_state(p, optimizer), params), optimizer


def state_bytes(config: ModelConfig, mesh_shape: tuple[int, int, int], optim: OptimConfig = OptimConfig()) -> dict:
    """Exact per-device bytes of parameters, gradients and optimizer state under TRAIN_RULES."""
    _, state, _ = abstract_state(config, optim)
    params = _tree_bytes(state.params, mesh_shape, sharding.TRAIN_RULES)
    return {"params": params, "grads": params, "opt_state": _tree_bytes(state.opt_state, mesh_shape,
                                                                         sharding.TRAIN_RULES)}


def _abstract_batch(step: StepShape, mesh: Mesh):
    def leaf(shape, dtype, axis):
        sh = sharding.batch_sharding(mesh, sharding.TRAIN_RULES, len(shape), axis)
        return jax.ShapeDtypeStruct(shape, dtype, sharding=sh)

    if step.kind == "sft":
        shape = (step.accum, step.rows, step.seq_len)
        return {k: leaf(shape, jnp.int32, 1) for k in ("input_ids", "attention_mask", "positions", "loss_mask")}
    lead, axis = ((step.accum,), 1) if step.accum > 1 else ((), 0)
    shape = (*lead, step.rows, step.seq_len)
    from jaxalign.rl.batch import GRPOBatch

    ints = {k: leaf(shape, jnp.int32, axis) for k in ("input_ids", "attention_mask", "positions", "target_mask")}
    return GRPOBatch(**ints, advantages=leaf(shape, jnp.float32, axis), old_logp=leaf(shape, jnp.float32, axis),
                     ref_logp=leaf(shape, jnp.float32, axis) if step.kl else None)


def compiled_bytes(config: ModelConfig, mesh: Mesh, step: StepShape, optim: OptimConfig = OptimConfig()) -> dict:
    """The compiled train step's per-device memory analysis (abstract inputs: nothing allocated)."""
    graphdef, state, optimizer = abstract_state(config, optim)
    if step.kind == "sft":
        fn = make_sft_step(graphdef, optimizer)
    else:
        fn = make_grpo_step(graphdef, optimizer, GRPOLossConfig(kl_coef=0.1 if step.kl else 0.0))
    state_sh = sharding.tree_shardings(state, mesh, sharding.TRAIN_RULES)

    def traced(s, b):
        with sharding.use_mesh(mesh, sharding.TRAIN_RULES):
            return fn(s, b)

    compiled = jax.jit(traced, in_shardings=(state_sh, None), out_shardings=(state_sh, None),
                       donate_argnums=(0,)).lower(state, _abstract_batch(step, mesh)).compile()
    m = compiled.memory_analysis()
    out = {k: int(getattr(m, f"{k}_size_in_bytes")) for k in ("argument", "output", "alias", "temp")}
    out["peak"] = out["argument"] + out["output"] - out["alias"] + out["temp"]
    return out


def estimate(config: ModelConfig, mesh: Mesh, step: StepShape, optim: OptimConfig = OptimConfig(),
             proxy_layers: tuple[int, int] = (2, 3)) -> dict:
    """Per-device bytes of one train step of `config` on `mesh`: exact state sizes from eval_shape,
    and the step's peak extrapolated from two compiled shallow proxies (see the module docstring)."""
    mesh_shape = tuple(mesh.shape[a] for a in sharding.MESH_AXES)
    out = {**state_bytes(config, mesh_shape, optim)}
    a, b = proxy_layers
    if config.num_layers <= b:
        out["peak"] = compiled_bytes(config, mesh, step, optim)["peak"]
        out["method"] = "compiled"
        return out
    lo = compiled_bytes(dataclasses.replace(config, num_layers=a), mesh, step, optim)["peak"]
    hi = compiled_bytes(dataclasses.replace(config, num_layers=b), mesh, step, optim)["peak"]
    out["per_layer"] = (hi - lo) // (b - a)
    out["peak"] = hi + (config.num_layers - b) * out["per_layer"]
    out["method"] = f"compiled {a}- and {b}-layer proxies, linear in depth"
    return out
