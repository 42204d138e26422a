"""`train.run.compile_scorer`: a scoring pass compiled under the mesh with explicit shardings equals
the one-device pass, keeps its parameters where the rules put them, and refuses a batch whose rows
do not split over the batch shards."""

import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding

from jaxalign import models, sharding
from jaxalign.models import ModelConfig
from jaxalign.train.run import compile_scorer


def _setup():
    model = models.init_model(ModelConfig.tiny(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2,
                                               num_heads=4, num_kv_heads=2), seed=3)
    graphdef, params = nnx.split(model)

    def score(p, batch):  # mean log-partition of each row: a stand-in for any reward head
        logits = nnx.merge(graphdef, p)(batch["ids"], batch["pos"], batch["mask"])
        return (logits.max(-1) * batch["mask"]).sum(-1)

    rng = np.random.RandomState(0)
    batch = {"ids": rng.randint(0, 64, (8, 12)).astype(np.int32), "pos": np.tile(np.arange(12, dtype=np.int32), (8, 1)),
             "mask": np.ones((8, 12), np.int32)}
    return score, params, batch


def test_mesh_equals_one_device_and_parameters_follow_the_rules():
    score, params, batch = _setup()
    mesh = sharding.make_mesh(sharding.MeshConfig(data=2, fsdp=2, tensor=2))
    one = compile_scorer(score, params, None, sharding.TRAIN_RULES)
    many = compile_scorer(score, params, mesh, sharding.TRAIN_RULES)
    assert one.mesh.devices.size == 1 and many.mesh is mesh
    want = sharding.tree_shardings(params, mesh, sharding.TRAIN_RULES)
    arrays = jax.tree.leaves(many.params)
    specs = jax.tree.leaves(want, is_leaf=lambda x: isinstance(x, NamedSharding))
    assert len(arrays) == len(specs) and any(not s.is_fully_replicated for s in specs)
    for got, sh in zip(arrays, specs):
        assert got.sharding.is_equivalent_to(sh, got.ndim)
    np.testing.assert_allclose(np.asarray(many(batch)), np.asarray(one(batch)), rtol=1e-5, atol=1e-5)


def test_rows_that_do_not_split_over_the_batch_shards_are_refused():
    score, params, batch = _setup()
    mesh = sharding.make_mesh(sharding.MeshConfig(data=2, fsdp=2, tensor=2))
    run = compile_scorer(score, params, mesh, sharding.TRAIN_RULES)
    with pytest.raises(ValueError, match=r"\[6\] rows is not a multiple of the mesh's 4 batch shards"):
        run({k: v[:6] for k, v in batch.items()})
