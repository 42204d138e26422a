"""Pytree helpers for restore: abstract targets with shardings, and a readable structure diff."""

from __future__ import annotations

from typing import Any

import jax

PyTree = Any


def abstract_target(tree: PyTree) -> PyTree:
    """The restore target orbax needs: every jax leaf becomes a `jax.ShapeDtypeStruct` with a sharding.

    Concrete `jax.Array` leaves keep their own sharding (restoring "into" them). A `ShapeDtypeStruct`
    without a sharding lands on the first local device: orbax cannot restore a jax.Array without one,
    and one device is the only placement that is right for every single-host caller. NumPy arrays and
    Python scalars stay as they are (orbax restores them as host values of the same type).
    """
    default = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

    def leaf(x: Any) -> Any:
        if isinstance(x, jax.Array):
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
        if isinstance(x, jax.ShapeDtypeStruct) and x.sharding is None:
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=default)
        return x

    return jax.tree.map(leaf, tree)


def _key_name(key: Any) -> str:
    # DictKey.key, GetAttrKey.name (namedtuples such as optax states), SequenceKey.idx: orbax stores
    # namedtuples as dicts and tuples as lists, so only the names / indices are comparable.
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def leaves_by_path(tree: PyTree) -> dict[str, Any]:
    """The leaves of `tree` keyed by '/'-joined key path (namedtuple fields and dict keys alike)."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {"/".join(_key_name(k) for k in path): leaf for path, leaf in flat}


def _stored_shape(leaf: Any) -> tuple[int, ...] | None:
    # Typed PRNG keys are stored as their key data, with the implementation's trailing dimensions.
    if not hasattr(leaf, "shape") or not hasattr(leaf, "dtype"):
        return None
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        return tuple(jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(leaf.shape, leaf.dtype)).shape)
    return tuple(leaf.shape)


def tree_diff(saved: dict[str, Any], wanted: dict[str, Any], limit: int = 10) -> str | None:
    """Why the saved leaves (orbax metadata by path) do not fit the wanted ones, or None when they do.

    Checking here rather than letting orbax fail keeps the message short and avoids orbax leaving
    half-started reads behind.
    """
    if set(saved) != set(wanted):
        return "tree structure differs: " + _path_diff(set(saved), set(wanted), limit)
    bad = []
    for path, leaf in wanted.items():
        have, want = getattr(saved[path], "shape", None), _stored_shape(leaf)
        if have is not None and want is not None and tuple(have) != want:
            bad.append(f"{path}: saved {tuple(have)}, wanted {want}")
    return f"shape differs for {len(bad)} leaves: {bad[:limit]}" if bad else None


def _path_diff(saved: set[str], wanted: set[str], limit: int) -> str:
    parts = []
    if missing := sorted(wanted - saved):
        parts.append(f"{len(missing)} leaves of abstract_state are not in the checkpoint: {missing[:limit]}")
    if extra := sorted(saved - wanted):
        parts.append(f"{len(extra)} leaves of the checkpoint are not in abstract_state: {extra[:limit]}")
    return "; ".join(parts)


