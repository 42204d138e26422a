"""The attention entry point against a float64 NumPy reference, forward and gradients, per kernel.

The Pallas kernels (TPU splash, GPU mha) run in interpret mode on the CPU. One batch holds the three
layouts that matter: a right-padded row, a left-padded row and a row packed with 3 segments (plus
padding), at a length that is a multiple of no block size. cuDNN needs a GPU and is not run here.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from jaxalign import sharding
from jaxalign.models.attention_ops import attention, resolve

T, H = 40, 8


def _ids(t: int) -> np.ndarray:
    ids = np.zeros((3, t), np.int32)
    ids[0, : t - 7] = 1                                   # right padding
    ids[1, 9:] = 1                                        # left padding
    ids[2, :11], ids[2, 11:23], ids[2, 23 : t - 3] = 1, 2, 3  # three packed segments, then padding
    return ids


def _inputs(n: int, k: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(3, T, n, H)).astype(np.float32)
    kv = [rng.normal(size=(3, T, k, H)).astype(np.float32) for _ in range(2)]
    do = rng.normal(size=(3, T, n, H)).astype(np.float32)
    return q, kv[0], kv[1], do


def _reference(q, k, v, ids, do, causal=True):
    """Output and (dq, dk, dv) of sum(out * do) in float64, by the textbook backward formulas."""
    q, k, v, do = (x.astype(np.float64) for x in (q, k, v, do))
    g = q.shape[2] // k.shape[2]
    kk, vv = np.repeat(k, g, axis=2), np.repeat(v, g, axis=2)
    scale = 1.0 / np.sqrt(q.shape[-1])
    mask = ids[:, :, None] == ids[:, None, :]
    if causal:
        mask &= np.tril(np.ones((q.shape[1],) * 2, bool))[None]
    s = np.where(mask[:, None], np.einsum("btnh,bsnh->bnts", q, kk) * scale, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    real = (ids > 0)[:, :, None, None]
    out = np.einsum("bnts,bsnh->btnh", p, vv) * real
    do = do * real
    dp = np.einsum("btnh,bsnh->bnts", do, vv)
    ds = p * (dp - (dp * p).sum(-1, keepdims=True))
    dq = np.einsum("bnts,bsnh->btnh", ds, kk) * scale
    dkk = np.einsum("bnts,btnh->bsnh", ds, q) * scale
    dvv = np.einsum("bnts,btnh->bsnh", p, do)
    fold = lambda x: x.reshape(*x.shape[:2], k.shape[2], g, x.shape[-1]).sum(3)  # noqa: E731
    return out, (dq, fold(dkk), fold(dvv))


def _check(impl, n, k, causal=True, **kw):
    q, kk, vv, do = _inputs(n, k)
    ids = _ids(T)
    want, want_grads = _reference(q, kk, vv, ids, do, causal)

    def loss(q, k, v):
        out = attention(q, k, v, segment_ids=jnp.asarray(ids), causal=causal, implementation=impl, **kw)
        return jnp.sum(out * do), out

    (_, out), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(q, kk, vv)
    # float32 kernels against float64: errors of a few float32 ulps of O(1) values, summed over T keys
    np.testing.assert_allclose(np.asarray(out), want, atol=2e-5, rtol=0)
    for got, ref, name in zip(grads, want_grads, "qkv"):
        np.testing.assert_allclose(np.asarray(got), ref, atol=5e-5, rtol=0, err_msg=f"d{name}")


@pytest.mark.parametrize("n,k", [(4, 4), (4, 2), (8, 2)])
def test_xla_blocks_equal_the_reference(n, k):
    _check("xla", n, k, block_q=16)  # 16-row query blocks: the last block is short (40 = 16+16+8)


def test_xla_without_the_causal_mask():
    _check("xla", 4, 2, causal=False, block_q=16)


@pytest.mark.parametrize("n,k", [(4, 4), (4, 2), (8, 2)])
def test_splash_kernel_equals_the_reference(n, k):
    _check("splash", n, k)


@pytest.mark.parametrize("n,k", [(4, 4), (4, 2), (8, 2)])
def test_pallas_gpu_kernel_equals_the_reference(n, k):
    _check("pallas_gpu", n, k)


def test_queries_against_a_longer_cache():
    """T new queries are the last T of S positions (prefill into a cache, decode at T=1)."""
    rng = np.random.default_rng(1)
    s, t = 24, 5
    q = rng.normal(size=(2, t, 4, H)).astype(np.float32)
    k, v = (rng.normal(size=(2, s, 2, H)).astype(np.float32) for _ in range(2))
    kv_ids = np.ones((2, s), np.int32)
    kv_ids[1, :6] = 0  # a left-padded row
    got = attention(q, k, v, segment_ids=jnp.ones((2, t), jnp.int32), kv_segment_ids=jnp.asarray(kv_ids))
    kk, vv = np.repeat(k, 2, axis=2).astype(np.float64), np.repeat(v, 2, axis=2).astype(np.float64)
    scores = np.einsum("btnh,bsnh->bnts", q.astype(np.float64), kk) / np.sqrt(H)
    visible = (np.arange(t)[:, None] + s - t >= np.arange(s)[None]) & (kv_ids[:, None, :] > 0)
    scores = np.where(visible[:, None], scores, -np.inf)
    p = np.exp(scores - scores.max(-1, keepdims=True))
    want = np.einsum("bnts,bsnh->btnh", p / p.sum(-1, keepdims=True), vv)
    np.testing.assert_allclose(np.asarray(got), want, atol=2e-5, rtol=0)


def test_auto_picks_per_backend_and_unknown_names_fail():
    assert [resolve(None, b) for b in ("tpu", "gpu", "cpu")] == ["splash", "pallas_gpu", "xla"]
    assert resolve("auto", "cpu") == "xla" and resolve("cudnn") == "cudnn"
    with pytest.raises(ValueError, match="flash7"):
        resolve("flash7")
    with pytest.raises(ValueError, match="kv_segment_ids"):
        attention(jnp.zeros((1, 2, 2, 4)), jnp.zeros((1, 3, 1, 4)), jnp.zeros((1, 3, 1, 4)))


def test_splash_under_a_mesh_runs_sharded_and_equals_one_device():
    """On (data 2, fsdp 1, tensor 2) the kernel runs in shard_map: rows over data, heads over tensor."""
    devices = np.array(jax.devices()[:4]).reshape(2, 1, 2)
    mesh = jax.sharding.Mesh(devices, ("data", "fsdp", "tensor"))
    q, k, v, _ = _inputs(4, 2)
    q, k, v = (np.concatenate([x, x[:1]]) for x in (q, k, v))  # 4 rows: 2 per data shard
    ids = np.concatenate([_ids(T), _ids(T)[:1]])
    want = attention(q, k, v, segment_ids=jnp.asarray(ids), implementation="splash")
    spec = NamedSharding(mesh, PartitionSpec("data", None, "tensor", None))
    placed = [jax.device_put(x, spec) for x in (q, k, v)]
    with sharding.use_mesh(mesh, sharding.TRAIN_RULES):
        run = jax.jit(lambda q, k, v, i: attention(q, k, v, segment_ids=i, implementation="splash"))
        got = run(*placed, jax.device_put(ids, NamedSharding(mesh, PartitionSpec("data", None))))
    assert got.sharding.spec[0] == "data" and got.sharding.spec[2] == "tensor"
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6, rtol=0)
