"""`target_logprobs` (chunked head under `jax.checkpoint`) against log-softmax of the plain forward pass."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxalign import models
from jaxalign.models import ModelConfig
from jaxalign.train import target_logprobs

CHUNKS = [4, 11, 256]  # 4 does not divide T = 11 (a padded last chunk); 11 is one chunk; 256 > T


@pytest.fixture(scope="module")
def model():
    return models.init_model(ModelConfig.tiny(vocab_size=50, num_layers=2), seed=3)


@pytest.fixture(scope="module")
def inputs():
    ids = np.random.RandomState(0).randint(0, 50, (2, 11)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, :3] = 0  # left padding in row 1
    positions = np.maximum(np.cumsum(mask, -1) - 1, 0).astype(np.int32)
    return ids, mask, positions


def reference(model, ids, mask, pos):
    logits = models.forward(model, ids, attention_mask=mask, positions=pos)[:, :-1]
    logp = jnp.take_along_axis(jax.nn.log_softmax(logits, -1), ids[:, 1:, None], -1)[..., 0]
    probs = jax.nn.softmax(logits, -1)
    return logp, -jnp.sum(probs * jnp.log(probs), -1)


@pytest.mark.parametrize("chunk", CHUNKS)
def test_values_equal_log_softmax_of_the_forward(model, inputs, chunk):
    ref_logp, ref_ent = reference(model, *inputs)
    for with_entropy in (False, True):
        logp, ent = target_logprobs(model, *inputs, chunk=chunk, with_entropy=with_entropy)
        np.testing.assert_allclose(np.asarray(logp[:, :-1]), np.asarray(ref_logp), atol=1e-5)
        assert np.all(np.asarray(logp[:, -1]) == 0)  # the last position has no target
        expected = np.asarray(ref_ent) if with_entropy else np.zeros_like(ref_ent)
        np.testing.assert_allclose(np.asarray(ent[:, :-1]), expected, atol=1e-5)


@pytest.mark.parametrize("chunk", [4, 256])
def test_gradient_equals_the_gradient_of_the_forward(model, inputs, chunk):
    graphdef, params = nnx.split(model)
    weights = jnp.asarray(np.random.RandomState(1).rand(2, 10), jnp.float32)

    def ours(p):
        logp, ent = target_logprobs(nnx.merge(graphdef, p), *inputs, chunk=chunk, with_entropy=True)
        return jnp.sum(weights * logp[:, :-1]) + 0.1 * jnp.sum(ent[:, :-1])

    def ref(p):
        logp, ent = reference(nnx.merge(graphdef, p), *inputs)
        return jnp.sum(weights * logp) + 0.1 * jnp.sum(ent)

    got, want = jax.grad(ours)(params), jax.grad(ref)(params)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-4)
    assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(got))
