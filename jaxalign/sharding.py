"""All sharding logic: the device mesh, logical-axis rule tables, and the activation constraint.

Parameters carry *logical* axis names (vocab, embed, heads, kv_heads, head_dim, mlp, layers) in
their `axes` metadata; activations are annotated with logical names too (batch, length, act_*).
A rule table maps logical names to the mesh axes ("data", "fsdp", "tensor"). Training and rollout
use different tables: training shards parameters FSDP-style over "fsdp"; rollout keeps them
replicated over "fsdp" (no all-gathers per decode step) and only splits heads / MLP over "tensor".
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

Rules = tuple[tuple[str, Any], ...]

TRAIN_RULES: Rules = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("layers", None),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_kv_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
)
"""Training: FSDP over "fsdp" (parameters and optimizer state split on embed), tensor parallel."""

ROLLOUT_RULES: Rules = tuple((name, None if name == "embed" else mesh) for name, mesh in TRAIN_RULES)
"""Rollout: parameters replicated over "fsdp", heads / MLP / vocab split over "tensor"."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class MeshConfig:
    """Device mesh shape; one of the sizes may be -1 to take all remaining devices."""

    data: int = 1
    """Pure data parallelism (parameters replicated)."""
    fsdp: int = -1
    """Data parallelism with parameters and optimizer state sharded (ZeRO-3 style)."""
    tensor: int = 1
    """Tensor (model) parallelism over heads and MLP width."""

    def __post_init__(self):
        sizes = (self.data, self.fsdp, self.tensor)
        if sum(s == -1 for s in sizes) > 1:
            raise ValueError(f"MeshConfig: at most one axis may be -1, got {sizes}")
        if any(s == 0 or s < -1 for s in sizes):
            raise ValueError(f"MeshConfig: sizes must be positive or -1, got {sizes}")

    def shape(self, num_devices: int) -> tuple[int, int, int]:
        """Resolves -1 and checks the product equals the number of devices."""
        sizes = [self.data, self.fsdp, self.tensor]
        known = math.prod(s for s in sizes if s != -1)
        if -1 in sizes:
            if num_devices % known:
                raise ValueError(f"MeshConfig {sizes}: {num_devices} devices not divisible by {known}")
            sizes[sizes.index(-1)] = num_devices // known
        if math.prod(sizes) > num_devices or (-1 in (self.data, self.fsdp, self.tensor)
                                               and math.prod(sizes) != num_devices):
            raise ValueError(f"MeshConfig {sizes} needs {math.prod(sizes)} devices, have {num_devices}")
        return tuple(sizes)


def make_mesh(config: MeshConfig = MeshConfig(), devices: Sequence[jax.Device] | None = None) -> Mesh:
    """Builds a ("data", "fsdp", "tensor") mesh over `devices` (default: all devices)."""
    devices = list(jax.devices() if devices is None else devices)
    shape = config.shape(len(devices))
    # An explicit mesh smaller than the machine uses its first devices (e.g. 1x1x1 = one device).
    return Mesh(np.asarray(devices[:math.prod(shape)]).reshape(shape), MESH_AXES)


def logical_to_spec(axes: Sequence[str | None], rules: Rules, shape: Sequence[int] | None = None,
                    mesh: Mesh | None = None) -> PartitionSpec:
    """Maps logical axis names to a PartitionSpec.

    When `shape` and `mesh` are given, a mesh axis that does not divide its dimension is dropped
    (that dimension is replicated instead), and a mesh axis is never used twice in one spec.
    """
    table = dict(rules)
    used: set[str] = set()
    spec = []
    for i, name in enumerate(axes):
        if name is None:
            spec.append(None)
            continue
        if name not in table:
            raise KeyError(f"logical axis {name!r} has no rule; known: {sorted(table)}")
        target = table[name]
        targets = () if target is None else (target,) if isinstance(target, str) else tuple(target)
        kept = []
        for mesh_axis in targets:
            if mesh_axis in used:
                continue
            if shape is not None and mesh is not None:
                size = mesh.shape[mesh_axis] * math.prod(mesh.shape[a] for a in kept)
                if shape[i] % size:
                    continue
            kept.append(mesh_axis)
        used.update(kept)
        spec.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
    return PartitionSpec(*spec)


def _axes_of(var: nnx.Variable) -> tuple:
    axes = var.get_metadata().get("axes")
    if axes is None:
        return (None,) * np.ndim(var.get_value())
    if len(axes) != np.ndim(var.get_value()):
        raise ValueError(f"axes {axes} do not match a value of shape {np.shape(var.get_value())}")
    return tuple(axes)


def state_shardings(state: Any, mesh: Mesh, rules: Rules) -> Any:
    """NamedShardings for every Variable of an nnx State (or any pytree of Variables)."""

    def one(var):
        spec = logical_to_spec(_axes_of(var), rules, np.shape(var.get_value()), mesh)
        return var.replace(NamedSharding(mesh, spec))

    return jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def state_specs(state: Any, mesh: Mesh, rules: Rules) -> dict[str, str]:
    """A flat {param path: PartitionSpec string} table, for golden sharding snapshots."""
    out = {}
    for path, var in nnx.to_flat_state(state):
        spec = logical_to_spec(_axes_of(var), rules, np.shape(var.get_value()), mesh)
        out["/".join(map(str, path))] = str(tuple(spec))
    return out


def tree_shardings(tree: Any, mesh: Mesh, rules: Rules) -> Any:
    """NamedShardings for a pytree: Variables by their logical axes, everything else replicated.

    Works for a TrainState: the optimizer's moment pytrees mirror the parameters' Variables (with
    their axes), so they shard exactly like the parameters (FSDP shards optimizer state too).
    """
    replicated = NamedSharding(mesh, PartitionSpec())

    def one(x):
        if isinstance(x, nnx.Variable):
            spec = logical_to_spec(_axes_of(x), rules, x.get_value().shape, mesh)
            return x.replace(NamedSharding(mesh, spec))
        return replicated

    return jax.tree.map(one, tree, is_leaf=lambda x: isinstance(x, nnx.Variable))


def batch_sharding(mesh: Mesh, rules: Rules, ndim: int, batch_axis: int) -> NamedSharding:
    """A batch leaf of rank `ndim` whose axis `batch_axis` is the batch: split over the data axes."""
    axes = [None] * ndim
    axes[batch_axis] = "batch"
    return NamedSharding(mesh, logical_to_spec(axes, rules))


def batch_shards(mesh: Mesh, rules: Rules) -> int:
    """How many pieces the logical "batch" axis splits into on `mesh` (rows must be a multiple)."""
    [target] = logical_to_spec(("batch",), rules)
    axes = () if target is None else (target,) if isinstance(target, str) else target
    return math.prod(mesh.shape[a] for a in axes)


def shard_module(module: nnx.Module, mesh: Mesh, rules: Rules) -> nnx.Module:
    """Places every parameter of `module` on `mesh` following `rules` (in place) and returns it."""
    state = nnx.state(module)
    shardings = state_shardings(state, mesh, rules)
    placed = jax.tree.map(lambda x, s: jax.device_put(x, s), state, shardings)
    nnx.update(module, placed)
    return module


# ---------------------------------------------------------------------------- activations
_CONTEXT: contextvars.ContextVar[tuple[Mesh, Rules] | None] = contextvars.ContextVar(
    "jaxalign_sharding", default=None
)


@contextlib.contextmanager
def use_mesh(mesh: Mesh, rules: Rules) -> Iterator[None]:
    """Within this context (at trace time), `constrain` pins activations to `mesh` by `rules`."""
    token = _CONTEXT.set((mesh, rules))
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def current() -> tuple[Mesh, Rules] | None:
    """The (mesh, rules) set by `use_mesh`, or None."""
    return _CONTEXT.get()


def constrain(x: jax.Array, axes: Sequence[str | None]) -> jax.Array:
    """Constrains an activation's sharding by logical axis names.

    Active whenever a mesh is set with `use_mesh`, on any platform (CPU meshes included); with no
    mesh set (plain single-device use) it returns `x` unchanged.
    """
    ctx = _CONTEXT.get()
    if ctx is None:
        return x
    mesh, rules = ctx
    spec = logical_to_spec(axes, rules, x.shape, mesh)
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


# ---------------------------------------------------------------------------- resharding
def reshard(tree: Any, shardings: Any) -> Any:
    """Moves every array of `tree` to the matching sharding of `shardings` (another mesh or table).

    This is how the RL loop hands training parameters (FSDP layout on the training mesh) to the
    sampler (rollout layout, possibly on another mesh). On one process it is a plain transfer. When
    the source spans several processes and the target is this host's own mesh (each host rolls out
    on its own devices), the source is first re-laid out on its own mesh with the target's spec, so
    every host already holds the pieces it needs (no host ever gathers the full model unless the
    target's tensor split does not exist within one host, in which case it falls back to that).
    """
    if jax.process_count() == 1:
        return jax.device_put(tree, shardings, may_alias=False)
    return jax.tree.map(_reshard_leaf, tree, shardings)


def _reshard_leaf(x: jax.Array, target: NamedSharding) -> jax.Array:
    if x.is_fully_addressable or not target.is_fully_addressable:
        if not x.is_fully_addressable and set(x.sharding.device_set) == set(target.device_set):
            return jax.jit(lambda a: a, out_shardings=target)(x)
        return jax.device_put(x, target, may_alias=False)
    src_mesh = x.sharding.mesh
    try:
        staged = jax.jit(lambda a: a, out_shardings=NamedSharding(src_mesh, target.spec))(x)
    except ValueError:  # the target spec does not divide on the source mesh
        staged = None
    wanted = target.addressable_devices_indices_map(x.shape)
    if staged is not None:
        by_index = {_index_key(s.index, x.shape): s.data for s in staged.addressable_shards}
        if all(_index_key(idx, x.shape) in by_index for idx in wanted.values()):
            pieces = [jax.device_put(by_index[_index_key(idx, x.shape)], d) for d, idx in wanted.items()]
            return jax.make_array_from_single_device_arrays(x.shape, target, pieces)
    full = jax.jit(lambda a: a, out_shardings=NamedSharding(src_mesh, PartitionSpec()))(x).addressable_data(0)
    return jax.device_put(full, target)


def _index_key(index: tuple, shape: Sequence[int]) -> tuple:
    return tuple(sl.indices(n)[:2] for sl, n in zip(index, shape))

