"""GRPO gradient accumulation: M micro-batches give the update and metrics of one [M * b, T] batch."""

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from jaxalign import models
from jaxalign.models import ModelConfig
from jaxalign.rl.batch import GRPOBatch
from jaxalign.rl.step import GRPOLossConfig, make_grpo_step
from jaxalign.train.state import init_train_state


def batch(rows=8, t=12, seed=0):
    rng = np.random.RandomState(seed)
    lens = rng.randint(4, t + 1, rows)
    mask = (np.arange(t)[None] < lens[:, None]).astype(np.int32)
    target = np.concatenate([mask[:, 1:], np.zeros((rows, 1), np.int32)], 1) * (rng.rand(rows, t) < 0.7)
    target[3] = 0  # a row without policy tokens (it must not count as a sequence)
    return {"input_ids": rng.randint(0, 64, (rows, t)).astype(np.int32) * mask, "attention_mask": mask,
            "positions": np.tile(np.arange(t, dtype=np.int32), (rows, 1)), "target_mask": target.astype(np.int32),
            "old_logp": rng.uniform(-5.0, -3.0, (rows, t)).astype(np.float32),
            "ref_logp": rng.uniform(-5.0, -3.0, (rows, t)).astype(np.float32),
            "advantages": rng.choice([-1.0, -0.3, 0.6, 1.2], rows).astype(np.float32)}


@pytest.mark.parametrize("agg,token_adv", [("token-mean", False), ("seq-mean-token-mean", False),
                                           ("seq-sum-norm", True)])
def test_micro_batches_equal_one_mini_batch(agg, token_adv):
    model = models.init_model(ModelConfig.tiny(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=1,
                                               num_heads=2, num_kv_heads=1), seed=1)
    graphdef, params = nnx.split(model)
    opt = optax.sgd(0.5)
    step = jax.jit(make_grpo_step(graphdef, opt, GRPOLossConfig(agg=agg, kl_coef=0.05, entropy_coef=0.01)))
    full = batch()
    if token_adv:  # per-token advantages [B, T] (dense rewards) are not mistaken for micro-batches
        full["advantages"] = full["advantages"][:, None] * np.linspace(0.5, 1.5, 12, dtype=np.float32)[None]
    adv = full["advantages"]  # a sequence advantage is broadcast onto every token
    full = GRPOBatch(**{**full, "advantages": np.broadcast_to(adv[:, None], (8, 12)) if adv.ndim == 1 else adv})
    micro = full.micro_batches(4)  # 4 micro-batches of 2 rows
    s1, m1 = step(init_train_state(params, opt), full)
    s4, m4 = step(init_train_state(params, opt), micro)
    assert set(m1) == set(m4)
    for k in m1:
        np.testing.assert_allclose(m4[k], m1[k], rtol=2e-5, atol=1e-6, err_msg=k)
    for a, b in zip(jax.tree.leaves(s4.params), jax.tree.leaves(s1.params)):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5)
    moved = max(float(np.abs(np.asarray(a) - np.asarray(p)).max())
                for a, p in zip(jax.tree.leaves(s1.params), jax.tree.leaves(params)))
    assert moved > 1e-4


def test_step_reports_the_scheduled_learning_rate():
    model = models.init_model(ModelConfig.tiny(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=1,
                                               num_heads=2, num_kv_heads=1), seed=1)
    graphdef, params = nnx.split(model)
    schedule = optax.linear_schedule(0.5, 0.1, 4)
    opt = optax.sgd(schedule)
    step = jax.jit(make_grpo_step(graphdef, opt, GRPOLossConfig(kl_coef=0.0), schedule=schedule))
    b = batch()
    b = GRPOBatch(**{**b, "advantages": np.broadcast_to(b["advantages"][:, None], (8, 12)), "ref_logp": None})
    state = init_train_state(params, opt)
    lrs = []
    for _ in range(2):
        state, m = step(state, b)
        lrs.append(float(m["lr"]))
        assert np.isfinite(float(m["grad_norm"]))
    np.testing.assert_allclose(lrs, [0.5, 0.4], rtol=1e-6)
