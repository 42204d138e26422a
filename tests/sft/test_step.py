"""SFT loss and train step: hand-computed loss, masked tokens carry no gradient, accumulation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxalign import models
from jaxalign.models import ModelConfig
from jaxalign.sft import make_sft_step, sft_loss_terms
from jaxalign.train import OptimConfig, decay_mask, make_optimizer
from jaxalign.train.state import init_train_state


@pytest.fixture(scope="module")
def model():
    return models.init_model(ModelConfig.tiny(vocab_size=40, num_layers=2), seed=2)


def batch_of(ids, loss_mask, segment_ids=None):
    ids = np.asarray(ids, np.int32)
    b = {"input_ids": ids, "loss_mask": np.asarray(loss_mask, np.int32), "attention_mask": np.ones_like(ids),
         "positions": np.broadcast_to(np.arange(ids.shape[-1], dtype=np.int32), ids.shape).copy()}
    if segment_ids is not None:
        b["segment_ids"] = np.asarray(segment_ids, np.int32)
    return b


def test_hand_computed_loss(model):
    ids = [[3, 17, 5, 9, 22, 31]]
    mask = [[0, 0, 1, 1, 0, 1]]  # prompt, prompt, policy, policy, tool output, policy
    total, count = sft_loss_terms(model, batch_of(ids, mask))
    logits = np.asarray(models.forward(model, np.asarray(ids, np.int32)))[0]
    logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - logits.max(-1,
                                                                                                             keepdims=True)
    expected = -(logp[1, 5] + logp[2, 9] + logp[4, 31])  # position t predicts ids[t + 1]
    assert float(count) == 3
    np.testing.assert_allclose(float(total), expected, rtol=1e-5)


def test_masked_tokens_contribute_no_gradient(model):
    graphdef, params = nnx.split(model)

    def grads(ids, mask):
        f = lambda p: sft_loss_terms(nnx.merge(graphdef, p), batch_of(ids, mask))[0]  # noqa: E731
        return jax.tree.leaves(jax.grad(f)(params))

    base = [[3, 17, 5, 9, 22, 31]]
    changed = [[3, 17, 5, 9, 22, 7]]  # only the last token differs: it is context for nothing
    tool_last = [[0, 0, 1, 1, 1, 0]]
    for a, b in zip(grads(base, tool_last), grads(changed, tool_last)):
        np.testing.assert_array_equal(a, b)  # a masked (tool) target: no gradient at all
    policy_last = [[0, 0, 1, 1, 1, 1]]
    diffs = [np.abs(a - b).max() for a, b in zip(grads(base, policy_last), grads(changed, policy_last))]
    assert max(diffs) > 1e-6  # the same change on a policy token does move the gradient
    zero = grads(base, [[0] * 6])
    assert all(np.all(g == 0) for g in zero)


@pytest.mark.parametrize("implementation", ["xla", "splash", "pallas_gpu"])
def test_packed_segments_do_not_predict_across_boundaries(model, implementation):
    """Packed loss = the unpacked rows' losses, with each attention implementation (Pallas: interpret)."""
    model = models.replace_config(model, attention=implementation)
    ids = [[3, 17, 5, 9, 22, 31]]
    mask = [[1, 1, 1, 1, 1, 1]]
    seg = [[1, 1, 1, 2, 2, 2]]
    total, count = sft_loss_terms(model, batch_of(ids, mask, seg))
    assert float(count) == 4  # 17, 5 (segment 1) and 22, 31 (segment 2); 9 would cross the boundary
    t1, _ = sft_loss_terms(model, batch_of([[3, 17, 5]], [[1, 1, 1]]))
    t2, _ = sft_loss_terms(model, batch_of([[9, 22, 31]], [[1, 1, 1]]))
    np.testing.assert_allclose(float(total), float(t1 + t2), rtol=1e-5)


def test_accumulation_equals_one_big_batch(model):
    graphdef, params = nnx.split(model)
    opt = make_optimizer(OptimConfig(learning_rate=1e-2, warmup_fraction=0.0), 10, mask=decay_mask(params))
    step = jax.jit(make_sft_step(graphdef, opt))
    rng = np.random.RandomState(0)
    ids = rng.randint(0, 40, (2, 8))
    mask = rng.randint(0, 2, (2, 8))
    one = {k: v[None] for k, v in batch_of(ids, mask).items()}  # A=1, B=2
    two = {k: v[:, None] for k, v in batch_of(ids, mask).items()}  # A=2, B=1
    s1, m1 = step(init_train_state(params, opt), one)
    s2, m2 = step(init_train_state(params, opt), two)
    np.testing.assert_allclose(float(m1["loss"]), float(m2["loss"]), rtol=1e-6)
    for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s2.params)):
        np.testing.assert_allclose(a, b, atol=2e-5)  # Adam amplifies float round-off in near-zero grads
    assert int(s1.step) == 1 and float(m1["policy_tokens"]) == float(((mask[:, 1:]) > 0).sum())


def test_loss_falls_when_training(model):
    graphdef, params = nnx.split(model)
    opt = make_optimizer(OptimConfig(learning_rate=3e-3, warmup_fraction=0.0, schedule="constant"), 50)
    step = jax.jit(make_sft_step(graphdef, opt), donate_argnums=0)
    batch = {k: v[None] for k, v in batch_of([[1, 2, 3, 4, 5, 6, 7, 8]], [[0, 1, 1, 1, 1, 1, 1, 1]]).items()}
    state = init_train_state(params, opt)
    losses = []
    for _ in range(40):
        state, m = step(state, batch)
        losses.append(float(m["loss"]))
    assert losses[-1] < 0.1 * losses[0]
    assert jnp.isfinite(losses[-1])
