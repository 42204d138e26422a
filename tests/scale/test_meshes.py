"""SFT and GRPO steps are the same computation on every mesh; parameters are split as the rule
tables say (golden snapshot); training weights reshard into the rollout layout for the sampler."""

import ast
import json
import os

import jax
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from jaxalign import models, sharding
from jaxalign.models import ModelConfig
from jaxalign.rl.batch import GRPOBatch
from jaxalign.rl.step import GRPOLossConfig, make_grpo_step
from jaxalign.sampling import Sampler, SamplingConfig
from jaxalign.sft.step import make_sft_step
from jaxalign.train import OptimConfig, decay_mask, make_optimizer
from jaxalign.train.logprobs import target_logprobs
from jaxalign.train.run import compile_step
from jaxalign.train.state import init_train_state

MESHES = [(1, 1, 1), (8, 1, 1), (2, 2, 2), (1, 4, 2)]  # data x fsdp x tensor
CONFIG = ModelConfig.tiny(vocab_size=64, qk_norm=True, qkv_bias=True, tie_embeddings=False)
GOLDEN = os.path.join(os.path.dirname(__file__), "golden_sharding_2x2x2.json")


def mesh_of(shape):
    return sharding.make_mesh(sharding.MeshConfig(data=shape[0], fsdp=shape[1], tensor=shape[2]))


def flat(params) -> dict[str, np.ndarray]:
    return {"/".join(map(str, p)): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(jax.device_get(params))}


@pytest.fixture(scope="module")
def model():
    return models.init_model(CONFIG, seed=7)


def right_padded(rng, rows, t):
    lens = rng.randint(t // 2, t + 1, rows)
    mask = (np.arange(t)[None] < lens[:, None]).astype(np.int32)
    return rng.randint(0, CONFIG.vocab_size, (rows, t)).astype(np.int32) * mask, mask


def sft_batch():
    rng = np.random.RandomState(0)
    ids, mask = right_padded(rng, 16, 16)
    shape = (2, 8, 16)  # two accumulated micro-batches of 8 rows
    return {"input_ids": ids.reshape(shape), "attention_mask": mask.reshape(shape),
            "loss_mask": (rng.rand(16, 16) < 0.6).astype(np.int32).reshape(shape) * mask.reshape(shape),
            "positions": np.tile(np.arange(16, dtype=np.int32), (2, 8, 1))}


def grpo_batch(model):
    rng = np.random.RandomState(1)
    ids, mask = right_padded(rng, 8, 16)
    logp, _ = target_logprobs(model, ids, mask, np.tile(np.arange(16, dtype=np.int32), (8, 1)))
    # old_logp off the current policy by up to +-0.4 so both clip sides and the dual clip are hit
    old = np.asarray(logp) + rng.uniform(-0.4, 0.4, logp.shape).astype(np.float32)
    target = np.concatenate([mask[:, 1:], np.zeros((8, 1), np.int32)], 1) * (rng.rand(8, 16) < 0.8)
    adv = rng.choice([-1.5, -0.5, 0.5, 1.5], 8).astype(np.float32)
    return GRPOBatch(input_ids=ids, attention_mask=mask, positions=np.tile(np.arange(16, dtype=np.int32), (8, 1)),
                     target_mask=target.astype(np.int32), old_logp=old,
                     advantages=np.broadcast_to(adv[:, None], (8, 16)).copy())


def run_steps(make_step, model, batch, shape, batch_axis, steps=2):
    graphdef, params = nnx.split(model)
    # Plain SGD: Adam's first steps are ~lr * sign(g), which turns round-off in near-zero gradients
    # into lr-sized differences; SGD keeps "same parameters within float tolerance" meaningful.
    opt = optax.sgd(0.3)
    step, state = compile_step(make_step(graphdef, opt), init_train_state(params, opt), mesh_of(shape),
                               sharding.TRAIN_RULES, batch_axis=batch_axis)
    losses = []
    for _ in range(steps):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    return losses, flat(state.params), state


@pytest.mark.parametrize("kind", ["sft", "grpo"])
def test_step_is_the_same_on_every_mesh(model, kind):
    if kind == "sft":
        make_step, batch, axis = make_sft_step, sft_batch(), 1
    else:
        make_step, batch, axis = (lambda g, o: make_grpo_step(g, o, GRPOLossConfig(kl_coef=0.0))), grpo_batch(model), 0
    ref_losses, ref_params, _ = run_steps(make_step, model, batch, MESHES[0], axis)
    init = flat(nnx.state(model))
    assert max(np.abs(ref_params[k] - init[k]).max() for k in init) > 1e-3  # the steps really moved the weights
    for shape in MESHES[1:]:
        losses, params, state = run_steps(make_step, model, batch, shape, axis)
        np.testing.assert_allclose(losses, ref_losses, rtol=2e-5, err_msg=f"{kind} loss on {shape}")
        for k in ref_params:
            np.testing.assert_allclose(params[k], ref_params[k], atol=2e-5, rtol=1e-4, err_msg=f"{kind} {k} {shape}")
        q = state.params["layers"]["attn"]["q_proj"].get_value()
        assert q.sharding.mesh.devices.shape == shape


def golden() -> dict[str, dict[str, P]]:
    with open(GOLDEN) as f:
        table = json.load(f)
    return {phase: {k: P(*ast.literal_eval(v)) for k, v in table[phase].items()} for phase in ("train", "rollout")}


def test_golden_sharding_snapshot(model):
    """Rule tables -> specs, and the placed training state (params and AdamW moments) really split so."""
    mesh = mesh_of((2, 2, 2))
    want = golden()
    for phase, rules in (("train", sharding.TRAIN_RULES), ("rollout", sharding.ROLLOUT_RULES)):
        got = {k: P(*ast.literal_eval(v)) for k, v in sharding.state_specs(nnx.state(model), mesh, rules).items()}
        assert got == want[phase], phase
    graphdef, params = nnx.split(model)
    opt = make_optimizer(OptimConfig(), 10, mask=decay_mask(params))
    _, state = compile_step(make_sft_step(graphdef, opt), init_train_state(params, opt), mesh, sharding.TRAIN_RULES)
    adam = state.opt_state[1][0]  # chain(clip, adamw): adamw's ScaleByAdamState
    for tree in (state.params, adam.mu, adam.nu):
        for path, var in nnx.to_flat_state(tree):
            key, x = "/".join(map(str, path)), var.get_value()
            assert x.sharding.spec == want["train"][key], key
            split = [np.prod([mesh.shape[a] for a in ((s,) if isinstance(s, str) else s or ())]) for s in
                     tuple(want["train"][key]) + (None,) * (x.ndim - len(want["train"][key]))]
            assert x.addressable_shards[0].data.shape == tuple(n // k for n, k in zip(x.shape, split)), key
    # FSDP: the per-device parameter and moment bytes are a quarter of the total here (fsdp 2 x tensor 2,
    # every large matrix splits on both), replicated only over data.
    big = state.params["layers"]["mlp"]["gate_proj"].get_value()
    assert big.addressable_shards[0].data.size * 4 == big.size


def test_training_weights_reshard_into_the_rollout_layout(model):
    graphdef, params = nnx.split(model)
    train = jax.device_put(params, sharding.tree_shardings(params, mesh_of((2, 2, 2)), sharding.TRAIN_RULES))
    want = golden()["rollout"]
    # the same 8 devices as (1, 4, 2), and a separate rollout mesh on devices 4..7 as (1, 2, 2)
    for devices, shape in ((jax.devices(), (1, 4, 2)), (jax.devices()[4:], (1, 2, 2))):
        rollout_mesh = sharding.make_mesh(sharding.MeshConfig(data=shape[0], fsdp=shape[1], tensor=shape[2]), devices)
        placed = sharding.reshard(train, sharding.tree_shardings(train, rollout_mesh, sharding.ROLLOUT_RULES))
        for path, var in nnx.to_flat_state(placed):
            x = var.get_value()
            assert x.sharding.mesh == rollout_mesh and x.sharding.spec == want["/".join(map(str, path))]
        got = flat(placed)
        for k, v in flat(params).items():
            np.testing.assert_array_equal(got[k], v)
    # The sampler on the rollout-layout weights and mesh generates exactly what it does on one device
    # (where its decode state lives: tests/scale/test_sampler_mesh.py).
    prompts = [[1, 5, 9, 2], [3, 4]]
    greedy = SamplingConfig(temperature=0.0)
    expected = Sampler(model).generate(prompts, greedy, max_new_tokens=6, stop_token_ids=())
    sampler = Sampler(model, mesh=rollout_mesh, rules=sharding.ROLLOUT_RULES)
    sampler.update(placed)
    assert {d for x in jax.tree.leaves(sampler.weights) for d in x.devices()} == set(jax.devices()[4:])
    got = sampler.generate(prompts, greedy, max_new_tokens=6, stop_token_ids=())
    assert [c.tokens for c in got] == [c.tokens for c in expected]
