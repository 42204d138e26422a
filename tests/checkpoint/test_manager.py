"""CheckpointManager: bitwise round trip, keep-last-K, extra, cadence, errors, restore across meshes."""

import os
import re

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, SingleDeviceSharding
from jax.sharding import PartitionSpec as P

from jaxalign.checkpoint import CheckpointManager, CheckpointMismatchError, CheckpointNotFoundError


def _bits(x):
    """A leaf as raw bytes plus dtype: typed keys through key_data, floats compared bit for bit (NaN, -0.0)."""
    if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        return ("key", str(jax.random.key_impl(x)), np.asarray(jax.random.key_data(x)).tobytes())
    a = np.asarray(x)
    return (str(a.dtype), a.shape, a.tobytes())


def assert_bitwise_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b)):
        assert _bits(x) == _bits(y), f"leaf {jax.tree_util.keystr(path)} differs"


def make_state(seed: int = 0):
    rng = np.random.default_rng(seed)
    special = np.array([np.nan, -0.0, np.inf, -np.inf, 1e-45, 3.0], np.float32)  # NaN payload, -0, denormal
    params = {
        "w": jnp.asarray(rng.standard_normal((16, 8)).astype(np.float32)),
        "w_bf16": jnp.asarray(rng.standard_normal((8, 4)).astype(ml_dtypes.bfloat16)),
        "special": jnp.asarray(special),
        "ids": jnp.asarray(rng.integers(-(2**31), 2**31 - 1, size=(5,), dtype=np.int32)),
    }
    trainable = {"w": params["w"], "w_bf16": params["w_bf16"]}
    tx = optax.adamw(1e-2)
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), trainable)
    _, opt_state = tx.update(grads, tx.init(trainable), trainable)  # mu, nu and count non-zero
    return {
        "params": params,
        "opt_state": opt_state,
        "rng": jax.random.key(seed + 7),  # new-style typed key
        "raw_rng": jax.random.PRNGKey(seed + 11),  # old-style uint32[2]
        "keys": jax.random.split(jax.random.key(seed), 4),
        "step": jnp.asarray(seed, jnp.int32),
    }


def test_round_trip_is_bitwise_and_keeps_types(tmp_path):
    state = make_state(1)
    with CheckpointManager(tmp_path / "ckpt", keep=2, save_every=1) as mgr:
        mgr.save(5, state, extra={"epoch": 2})
        step, restored, extra = mgr.restore(jax.eval_shape(lambda: state))
    assert step == 5 and extra == {"epoch": 2}
    assert_bitwise_equal(state, restored)
    assert type(restored["opt_state"][0]) is type(state["opt_state"][0])  # optax namedtuple, not a dict
    assert jax.dtypes.issubdtype(restored["rng"].dtype, jax.dtypes.prng_key)
    # The restored key drives the same random stream.
    assert np.array_equal(jax.random.normal(restored["rng"], (3,)), jax.random.normal(state["rng"], (3,)))


def test_restore_into_concrete_arrays_and_by_step(tmp_path):
    with CheckpointManager(tmp_path, keep=3, save_every=1) as mgr:
        for s in (1, 2, 3):
            mgr.save(s, make_state(s), extra={"s": s})
        target = make_state(0)  # concrete arrays: shapes, dtypes and shardings are taken from them
        step, restored, extra = mgr.restore(target, step=2)
    assert step == 2 and extra == {"s": 2}
    assert_bitwise_equal(make_state(2), restored)


def test_extra_round_trips_json(tmp_path):
    extra = {
        "data_position": {"shard": 3, "offset": 123456789012},
        "config": {"lr": 3e-4, "name": "sft", "layers": [1, 2, 3], "flag": True, "none": None},
        "epoch": 4,
        "metrics": {"loss": 1.25},
    }
    with CheckpointManager(tmp_path, save_every=1) as mgr:
        mgr.save(1, {"x": jnp.zeros(2)}, extra=extra)
        _, _, got = mgr.restore({"x": jax.ShapeDtypeStruct((2,), jnp.float32)})
    assert got == extra
    with CheckpointManager(tmp_path, save_every=1) as mgr, pytest.raises(TypeError, match="not JSON-serialisable"):
        mgr.save(2, {"x": jnp.zeros(2)}, extra={"bad": object()})


def test_keep_last_k_deletes_old_steps_and_resume_sees_them(tmp_path):
    state = {"x": jnp.arange(4.0)}
    with CheckpointManager(tmp_path, keep=2, save_every=1) as mgr:
        for s in range(1, 6):
            mgr.save(s, jax.tree.map(lambda v, s=s: v + s, state))
        mgr.wait()
        assert mgr.all_steps() == [4, 5]
        assert sorted(os.listdir(tmp_path)) == ["4", "5"]  # nothing left in the trash or as temporaries
    reopened = CheckpointManager(tmp_path, keep=2, save_every=1)
    assert reopened.latest_step() == 5
    step, got, _ = reopened.restore({"x": jax.ShapeDtypeStruct((4,), jnp.float32)}, step=4)
    assert step == 4 and np.array_equal(got["x"], np.arange(4.0) + 4)
    with pytest.raises(FileExistsError, match="step 5 already exists"):
        reopened.save(5, state)
    reopened.close()


def test_clear_removes_every_step_so_a_restarted_run_can_save_them_again(tmp_path):
    state = {"x": jnp.arange(4.0)}
    with CheckpointManager(tmp_path, keep=3, save_every=1) as mgr:
        for s in (1, 2):
            mgr.save(s, state)
        mgr.clear()
        assert mgr.all_steps() == [] and mgr.latest_step() is None
        assert os.listdir(tmp_path) == []
        mgr.save(2, jax.tree.map(lambda v: v + 1, state))  # the step a finished earlier run had saved
        mgr.wait()
        _, got, _ = mgr.restore({"x": jax.ShapeDtypeStruct((4,), jnp.float32)})
        assert np.array_equal(got["x"], np.arange(4.0) + 1)
    with CheckpointManager(tmp_path, keep=3, save_every=1, start_over=True) as mgr:  # what resume=False opens
        assert mgr.all_steps() == [] and os.listdir(tmp_path) == []


def test_should_save_cadence(tmp_path):
    with CheckpointManager(tmp_path, save_every=3) as mgr:
        assert [s for s in range(1, 11) if mgr.should_save(s)] == [3, 6, 9]
        mgr.save(6, {"x": jnp.zeros(1)})
        mgr.wait()
        assert not mgr.should_save(3)  # never older than the latest checkpoint
        assert mgr.should_save(9)
    with pytest.raises(ValueError, match="keep must be >= 1"):
        CheckpointManager(tmp_path, keep=0)


def test_missing_step_and_mismatched_tree_name_directory_and_step(tmp_path):
    where = re.escape(str(tmp_path))
    abstract = {"a": jax.ShapeDtypeStruct((3,), jnp.float32), "b": jax.ShapeDtypeStruct((2,), jnp.int32)}
    with CheckpointManager(tmp_path, save_every=1) as mgr:
        with pytest.raises(CheckpointNotFoundError, match=f"{where}: no complete checkpoint to restore"):
            mgr.restore(abstract)
        assert mgr.latest_step() is None
        mgr.save(1, {"a": jnp.ones(3), "b": jnp.arange(2, dtype=jnp.int32)})
        with pytest.raises(CheckpointNotFoundError, match=rf"{where}: no complete checkpoint for step 7 .*\[1\]"):
            mgr.restore(abstract, step=7)
        wrong_tree = {"a": abstract["a"], "c": abstract["b"]}
        with pytest.raises(CheckpointMismatchError, match=f"{where} step 1: tree structure differs") as err:
            mgr.restore(wrong_tree)
        assert "['c']" in str(err.value) and "['b']" in str(err.value)
        wrong_shape = {"a": jax.ShapeDtypeStruct((4,), jnp.float32), "b": abstract["b"]}
        want = rf"{where} step 1: shape differs .*a: saved \(3,\), wanted \(4,\)"
        with pytest.raises(CheckpointMismatchError, match=want):
            mgr.restore(wrong_shape)


def _mesh():
    return Mesh(np.array(jax.devices()).reshape(2, 2, 2), ("data", "fsdp", "tensor"))


def _sharded_state(mesh):
    rng = np.random.default_rng(3)
    put = lambda x, spec: jax.device_put(x, NamedSharding(mesh, spec))
    return {
        "embed": put(rng.standard_normal((16, 8)).astype(np.float32), P("fsdp", "tensor")),
        "mlp": put(rng.standard_normal((8, 12)).astype(ml_dtypes.bfloat16), P(None, ("data", "tensor"))),
        "bias": put(np.arange(6, dtype=np.int32), P()),
        "keys": put(jax.random.split(jax.random.key(5), 8), P(("data", "fsdp"))),
    }


def test_save_on_mesh_restore_on_one_device_and_back(tmp_path):
    mesh = _mesh()
    state = _sharded_state(mesh)
    one = SingleDeviceSharding(jax.devices()[0])
    on_one = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=one), state)
    on_mesh = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
    with CheckpointManager(tmp_path / "from_mesh", save_every=1) as mgr:
        mgr.save(1, state)
        _, restored, _ = mgr.restore(on_one)
    assert_bitwise_equal(state, restored)
    assert all(leaf.sharding == one for leaf in jax.tree.leaves(restored))

    with CheckpointManager(tmp_path / "from_one", save_every=1) as mgr:
        mgr.save(1, restored)  # single-device arrays
        _, back, _ = mgr.restore(on_mesh)
    assert_bitwise_equal(state, back)
    for want, got in zip(jax.tree.leaves(on_mesh), jax.tree.leaves(back)):
        assert got.sharding == want.sharding
    # The fsdp x tensor split really happened: each device holds an 8x4 block of the 16x8 embedding.
    assert {s.data.shape for s in back["embed"].addressable_shards} == {(8, 4)}


def test_async_save_does_not_need_the_device_buffers_afterwards(tmp_path):
    # Trainers donate the state to the next step right after `save` returns.
    x = {"a": jnp.arange(2**20, dtype=jnp.float32)}
    with CheckpointManager(tmp_path, save_every=1) as mgr:
        mgr.save(1, x)
        x["a"].delete()
        mgr.wait()
        _, got, _ = mgr.restore({"a": jax.ShapeDtypeStruct((2**20,), jnp.float32)})
    assert np.array_equal(got["a"], np.arange(2**20, dtype=np.float32))


def _truncate(path: str) -> None:
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def _truncate_arrays(step_dir: str) -> None:
    """Cuts every array data file of a step in half (a disk that filled up after the commit)."""
    for root, _, files in os.walk(os.path.join(step_dir, "state")):
        if os.path.basename(root) == "d":
            for name in files:
                _truncate(os.path.join(root, name))


@pytest.mark.parametrize("damage", ["arrays", "metadata"])
def test_unreadable_newest_step_is_skipped_set_aside_and_saved_again(tmp_path, damage, caplog):
    mgr = CheckpointManager(tmp_path / "ck", keep=3, save_every=1, async_save=False)
    for step in (1, 2, 3):
        mgr.save(step, make_state(step), {"step": step})
    mgr.close()
    step3 = tmp_path / "ck" / "3"
    if damage == "arrays":
        _truncate_arrays(str(step3))
    else:
        _truncate(str(step3 / "state" / "_METADATA"))
    mgr = CheckpointManager(tmp_path / "ck", keep=3, save_every=1, async_save=False)
    with caplog.at_level("WARNING", logger="jaxalign.checkpoint.manager"):
        step, state, extra = mgr.restore(make_state(0))
    assert (step, extra) == (2, {"step": 2})
    assert_bitwise_equal(state, make_state(2))
    assert "step 3 does not restore" in caplog.text
    # kept, out of the way: nothing is deleted, and the resumed run can write step 3 again
    [aside] = os.listdir(tmp_path / "ck" / "unreadable")
    assert aside.startswith("3-") and not step3.exists()
    assert mgr.all_steps() == [1, 2]
    mgr.save(3, make_state(3), {"step": 3})
    assert mgr.restore(make_state(0))[0] == 3
    mgr.close()


def test_no_restorable_step_names_every_step_and_keeps_them(tmp_path):
    from jaxalign.checkpoint.manager import CheckpointUnreadableError

    mgr = CheckpointManager(tmp_path / "ck", keep=3, save_every=1, async_save=False)
    for step in (1, 2):
        mgr.save(step, make_state(step))
    mgr.close()
    for step in (1, 2):
        _truncate(str(tmp_path / "ck" / str(step) / "state" / "_METADATA"))
    mgr = CheckpointManager(tmp_path / "ck", keep=3, save_every=1, async_save=False)
    with pytest.raises(CheckpointUnreadableError, match=r"step 2: .*; step 1: "):
        mgr.restore(make_state(0))
    assert mgr.all_steps() == [1, 2]  # nothing moved or deleted when nothing restores
    mgr.close()
