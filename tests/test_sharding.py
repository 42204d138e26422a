"""Mesh, rule tables, and sharded forward on 8 CPU devices."""

import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from jaxalign import models, sharding
from jaxalign.models import ModelConfig


def test_eight_fake_devices():
    assert len(jax.devices()) == 8


def test_mesh_config_resolves_and_validates():
    assert sharding.MeshConfig(data=2, fsdp=-1, tensor=2).shape(8) == (2, 2, 2)
    mesh = sharding.make_mesh(sharding.MeshConfig(data=1, fsdp=4, tensor=2))
    assert mesh.axis_names == ("data", "fsdp", "tensor") and mesh.devices.shape == (1, 4, 2)
    with pytest.raises(ValueError, match="needs 12 devices"):
        sharding.MeshConfig(data=3, fsdp=2, tensor=2).shape(8)
    one = sharding.make_mesh(sharding.MeshConfig(data=1, fsdp=1, tensor=1))
    assert one.devices.size == 1  # an explicit smaller mesh takes the first devices
    with pytest.raises(ValueError, match="at most one axis"):
        sharding.MeshConfig(data=-1, fsdp=-1)


def test_logical_to_spec_rules_and_divisibility():
    mesh = sharding.make_mesh(sharding.MeshConfig(data=2, fsdp=2, tensor=2))
    spec = sharding.logical_to_spec(("embed", "heads", "head_dim"), sharding.TRAIN_RULES, (64, 4, 16), mesh)
    assert spec == P("fsdp", "tensor", None)
    # 3 kv heads cannot split over tensor=2: replicated instead of failing.
    spec = sharding.logical_to_spec(("embed", "kv_heads", "head_dim"), sharding.TRAIN_RULES, (64, 3, 16), mesh)
    assert spec == P("fsdp", None, None)
    spec = sharding.logical_to_spec(("embed", "heads", "head_dim"), sharding.ROLLOUT_RULES, (64, 4, 16), mesh)
    assert spec == P(None, "tensor", None)
    assert sharding.logical_to_spec(("batch", "length"), sharding.TRAIN_RULES) == P(("data", "fsdp"), None)


def test_params_are_split_as_the_rules_say():
    model = models.init_model(ModelConfig.tiny(vocab_size=64, num_kv_heads=2))
    mesh = sharding.make_mesh(sharding.MeshConfig(data=2, fsdp=2, tensor=2))
    specs = sharding.state_specs(nnx.state(model), mesh, sharding.TRAIN_RULES)
    assert specs == {
        "embed": "('tensor', 'fsdp')",
        "final_norm/scale": "('fsdp',)",
        "layers/attn/k_proj": "(None, 'fsdp', 'tensor', None)",
        "layers/attn/o_proj": "(None, 'tensor', None, 'fsdp')",
        "layers/attn/q_proj": "(None, 'fsdp', 'tensor', None)",
        "layers/attn/v_proj": "(None, 'fsdp', 'tensor', None)",
        "layers/input_norm/scale": "(None, 'fsdp')",
        "layers/mlp/down_proj": "(None, 'tensor', 'fsdp')",
        "layers/mlp/gate_proj": "(None, 'fsdp', 'tensor')",
        "layers/mlp/up_proj": "(None, 'fsdp', 'tensor')",
        "layers/post_attn_norm/scale": "(None, 'fsdp')",
    }
    sharding.shard_module(model, mesh, sharding.TRAIN_RULES)
    q = model.layers.attn.q_proj.get_value()
    assert q.sharding.spec == P(None, "fsdp", "tensor", None)
    # each device holds a quarter of q (fsdp=2 x tensor=2), replicated over data=2
    assert q.addressable_shards[0].data.shape == (2, 32, 2, 16)


@pytest.mark.parametrize("rules", [sharding.TRAIN_RULES, sharding.ROLLOUT_RULES])
def test_sharded_forward_equals_single_device(rules):
    config = ModelConfig.tiny(vocab_size=64, qkv_bias=True, tie_embeddings=False)
    model = models.init_model(config, seed=3)
    ids = np.random.RandomState(0).randint(0, 64, (4, 12)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, :5] = 0
    expected = np.asarray(models.jit_forward(model, ids, attention_mask=mask))

    mesh = sharding.make_mesh(sharding.MeshConfig(data=2, fsdp=2, tensor=2))
    sharded = sharding.shard_module(models.init_model(config, seed=3), mesh, rules)
    graphdef, state = nnx.split(sharded)

    @jax.jit
    def run(state, ids, mask):
        with sharding.use_mesh(mesh, rules):
            return models.forward(nnx.merge(graphdef, state), ids, attention_mask=mask)

    batch = jax.sharding.NamedSharding(mesh, P(("data", "fsdp"), None))
    got = run(state, jax.device_put(ids, batch), jax.device_put(mask, batch))
    assert got.sharding.spec == P(("data", "fsdp"), None, "tensor")  # the constraint is active on CPU
    real = mask.astype(bool)
    np.testing.assert_allclose(np.asarray(got)[real], expected[real], atol=2e-5, rtol=1e-5)
