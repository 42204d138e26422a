"""The sampler on a rollout mesh: decode state and KV cache split by rows over ("data", "fsdp"), the
cache's kv-heads over "tensor"; greedy output equals the single-device sampler (batch 1 padded up to
the row shards, tool-output appends, rollback and compaction included)."""

import jax
import numpy as np
import pytest

from jaxalign import models, sharding
from jaxalign.models import ModelConfig
from jaxalign.sampling import Sampler, SamplingConfig, StopTable, bucket

VOCAB = 97
CONFIG = ModelConfig.tiny(vocab_size=VOCAB, qkv_bias=True)  # 4 heads, 2 kv-heads: tensor 2 splits them
MESHES = [(1, 4, 1), (1, 2, 2)]  # data x fsdp x tensor, on 4 of the 8 fake devices
GREEDY = SamplingConfig(temperature=0.0)
ROW_FIELDS = ("logits", "next_pos", "tokens", "logprobs", "length", "budget", "active", "stop_reason", "recent")


@pytest.fixture(scope="module")
def model():
    return models.init_model(CONFIG, seed=7)


@pytest.fixture(scope="module")
def single(model):
    return Sampler(model, pad_id=0)


@pytest.fixture(scope="module", params=MESHES, ids=lambda s: "x".join(map(str, s)))
def placed(request, model):
    data, fsdp, tensor = request.param
    mesh = sharding.make_mesh(sharding.MeshConfig(data=data, fsdp=fsdp, tensor=tensor), jax.devices()[:4])
    return Sampler(model, mesh=mesh, rules=sharding.ROLLOUT_RULES, pad_id=0)


def prompts(n):
    rng = np.random.RandomState(0)
    return [rng.randint(1, VOCAB, k).tolist() for k in (5, 9, 2)[:n]]


def assert_split_by_rows(state, sampler):
    """Every [B, ...] array is split over (data, fsdp) on the sampler's mesh; the cache's kv-heads over tensor."""
    mesh = sampler.mesh
    shards, tensor = mesh.shape["data"] * mesh.shape["fsdp"], mesh.shape["tensor"]
    assert state.tokens.shape[0] % shards == 0
    arrays = {name: getattr(state, name) for name in ROW_FIELDS}
    arrays["cache.mask"] = state.cache.mask
    arrays.update({f"cache.k[{i}]": x for i, x in enumerate(state.cache.k)})
    arrays.update({f"cache.v[{i}]": x for i, x in enumerate(state.cache.v)})
    for name, x in arrays.items():
        assert x.sharding.mesh == mesh, name
        assert x.sharding.spec[0] == ("data", "fsdp"), (name, x.sharding.spec)
        piece = x.sharding.shard_shape(x.shape)
        assert piece[0] == x.shape[0] // shards, (name, piece, x.shape)
        if name.startswith(("cache.k", "cache.v")):
            assert piece[1] == CONFIG.num_kv_heads // tensor, (name, piece)
    for x in (state.cache.index, state.rng):
        assert x.sharding.mesh == mesh and x.sharding.is_fully_replicated
    assert {d for x in jax.tree.leaves(sampler.weights) for d in x.devices()} == set(mesh.devices.flat)


@pytest.mark.parametrize("n", [3, 1])
def test_generate_on_a_mesh_equals_one_device(single, placed, n):
    expected = single.generate(prompts(n), GREEDY, max_new_tokens=12, stop_token_ids=[])
    got = placed.generate(prompts(n), GREEDY, max_new_tokens=12, stop_token_ids=[])
    assert [c.tokens for c in got] == [c.tokens for c in expected]
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-5)
        assert a.stop_reason == b.stop_reason == "budget"


def drive(sampler, n, check=lambda state: None):
    """Prefill, decode, a rollback, tool outputs appended, compaction, more decoding; returns what the
    host reads after each decode (tokens, log-probs, lengths of the real rows)."""
    stops = StopTable.build()
    state = sampler.start(prompts(n), cache_size=128, max_tokens=16, window=stops.window,
                          batch=bucket(n, minimum=1))
    b = state.tokens.shape[0]
    real = np.arange(b) < n
    check(state)
    reads = []
    state = sampler.start_segment(state, real, np.full(b, 5, np.int32))
    state = sampler.run(state, GREEDY, stops, 8)
    check(state)
    reads.append(jax.device_get((state.tokens[:n], state.logprobs[:n], state.length[:n])))
    drop = np.zeros(b, np.int32)
    drop[n - 1] = 2  # the host saw the last row run past a tool call: forget its last two tokens
    state = sampler.rollback(state, drop)
    tool = {0: [7, 8, 9], n - 1: [11, 12]} if n > 1 else {0: [7, 8, 9]}
    state = sampler.append(state, tool)
    check(state)
    state = sampler.compact(state)
    check(state)
    state = sampler.start_segment(state, real, np.full(b, 6, np.int32))
    state = sampler.run(state, GREEDY, stops, 8)
    check(state)
    reads.append(jax.device_get((state.tokens[:n], state.logprobs[:n], state.length[:n])))
    return reads


@pytest.mark.parametrize("n", [3, 1])
def test_state_stays_split_by_rows_through_append_and_compaction(single, placed, n):
    expected = drive(single, n)
    got = drive(placed, n, check=lambda state: assert_split_by_rows(state, placed))
    for (tok, lp, length), (tok_e, lp_e, length_e) in zip(got, expected):
        np.testing.assert_array_equal(length, length_e)
        np.testing.assert_array_equal(tok, tok_e)
        np.testing.assert_allclose(lp, lp_e, atol=1e-5)


def test_rows_pad_up_to_the_row_shards(placed):
    shards = placed.mesh.shape["data"] * placed.mesh.shape["fsdp"]
    assert placed.row_shards == shards
    state = placed.start(prompts(1), cache_size=64, max_tokens=8, batch=1)
    assert state.tokens.shape[0] == shards
    assert not np.asarray(state.cache.mask)[1:].any()  # the padding rows hold no tokens
