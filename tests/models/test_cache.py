"""KV cache: prefill + step-by-step decode equals one full forward pass."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxalign import models
from jaxalign.models import ModelConfig


def tiny(**kw):
    return models.init_model(ModelConfig.tiny(vocab_size=61, num_layers=2, **kw), seed=1)


def test_token_by_token_decode_equals_full_forward():
    model = tiny(qk_norm=True, qkv_bias=True)
    ids = np.random.RandomState(0).randint(0, 61, (3, 10)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[0, :4] = 0  # left padding on row 0
    mask[2, :1] = 0
    cache = _prefill_then_step_by_step_equals_forward(model, ids, mask, cache_size=16, prefix=5)
    assert int(cache.index) == 10


def _prefill_then_step_by_step_equals_forward(model, ids, mask, *, cache_size, prefix):
    """Prefills `prefix` tokens, decodes the rest one at a time; checks every real position."""
    full = np.asarray(models.forward(model, ids, attention_mask=mask))
    pos = np.asarray(models.default_positions(mask))
    cache = models.init_cache(model.config, ids.shape[0], cache_size)
    logits, cache = models.jit_forward_cached(model, ids[:, :prefix], cache, attention_mask=mask[:, :prefix],
                                              positions=pos[:, :prefix])
    steps = [np.asarray(logits)]
    for t in range(prefix, ids.shape[1]):
        logits, cache = models.jit_forward_cached(model, ids[:, t:t + 1], cache,
                                                  attention_mask=mask[:, t:t + 1], positions=pos[:, t:t + 1])
        steps.append(np.asarray(logits))
    cached = np.concatenate(steps, axis=1)
    real = mask.astype(bool)
    np.testing.assert_allclose(cached[real], full[real], atol=2e-5, rtol=1e-5)
    return cache


def test_chunks_with_holes_equal_contiguous_sequence():
    """Rows appended with chunks of different lengths (masked holes in the cache) still see exactly
    their own real tokens, as the multi-turn rollout needs."""
    model = tiny()
    rng = np.random.RandomState(1)
    seq_a, seq_b = rng.randint(0, 61, 9), rng.randint(0, 61, 6)
    full_a = np.asarray(models.forward(model, seq_a[None]))[0]
    full_b = np.asarray(models.forward(model, seq_b[None]))[0]
    cache = models.init_cache(model.config, 2, 32)
    # chunk 1: a gets 4 tokens, b gets 2 (right-padded); chunk 2: a gets 5, b gets 4.
    chunks = [([seq_a[:4], seq_b[:2]], 4), ([seq_a[4:], seq_b[2:]], 5)]
    done = [0, 0]
    outs = [[], []]
    for (part_a, part_b), width in chunks:
        ids = np.zeros((2, width), np.int32)
        mask = np.zeros((2, width), np.int32)
        pos = np.zeros((2, width), np.int32)
        for r, part in enumerate((part_a, part_b)):
            ids[r, :len(part)] = part
            mask[r, :len(part)] = 1
            pos[r, :len(part)] = np.arange(done[r], done[r] + len(part))
        logits, cache = models.jit_forward_cached(model, ids, cache, attention_mask=mask, positions=pos)
        for r, part in enumerate((part_a, part_b)):
            outs[r].append(np.asarray(logits)[r, :len(part)])
            done[r] += len(part)
    np.testing.assert_allclose(np.concatenate(outs[0]), full_a, atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(np.concatenate(outs[1]), full_b, atol=2e-5, rtol=1e-5)


def test_bfloat16_cache_decode_close_to_full_forward():
    model = models.replace_config(tiny(), dtype="bfloat16")
    ids = np.random.RandomState(2).randint(0, 61, (2, 6)).astype(np.int32)
    full = np.asarray(models.forward(model, ids))
    cache = models.init_cache(model.config, 2, 8)
    assert cache.k[0].dtype == jax.numpy.bfloat16
    steps = []
    for t in range(6):
        logits, cache = models.jit_forward_cached(model, ids[:, t:t + 1], cache,
                                              positions=np.full((2, 1), t, np.int32))
        steps.append(np.asarray(logits))
    np.testing.assert_allclose(np.concatenate(steps, 1), full, atol=0.05)


def test_attention_spans_double_up_to_the_cache_size():
    from jaxalign.models.decode import attention_spans

    assert attention_spans(200) == (64, 128, 200)
    assert attention_spans(256) == (64, 128, 256)
    assert attention_spans(64) == (64,) and attention_spans(16) == (16,)


def test_decode_across_attention_spans_equals_full_forward():
    """Steps attend over the used prefix of the cache only (64, 128, then all 200 slots); crossing
    each boundary changes nothing: every step equals the full forward pass."""
    model = tiny()
    n = 140
    ids = np.random.RandomState(2).randint(0, 61, (2, n)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, :7] = 0  # left padding on row 1
    _prefill_then_step_by_step_equals_forward(model, ids, mask, cache_size=200, prefix=60)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_batch_of_one_decode_equals_full_forward(dtype):
    """Batch 1 decodes with one row per matmul (`linear`'s own path on CPU); it equals the full
    forward pass, and the same sequence decoded as row 0 of a batch of 2."""
    model = models.replace_config(tiny(qkv_bias=True), dtype=dtype)
    ids = np.random.RandomState(3).randint(0, 61, (2, 9)).astype(np.int32)
    tol = dict(atol=2e-5, rtol=1e-5) if dtype == "float32" else dict(atol=0.05)
    full = np.asarray(models.forward(model, ids[:1]))
    one, two = models.init_cache(model.config, 1, 16), models.init_cache(model.config, 2, 16)
    steps_one, steps_two = [], []
    for t in range(ids.shape[1]):
        pos = np.full((2, 1), t, np.int32)
        logits, one = models.jit_forward_cached(model, ids[:1, t:t + 1], one, positions=pos[:1])
        steps_one.append(np.asarray(logits))
        logits, two = models.jit_forward_cached(model, ids[:, t:t + 1], two, positions=pos)
        steps_two.append(np.asarray(logits)[:1])
    np.testing.assert_allclose(np.concatenate(steps_one, 1), full, **tol)
    np.testing.assert_allclose(np.concatenate(steps_one, 1), np.concatenate(steps_two, 1), **tol)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the small-row paths of `linear` are CPU-only")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_one_row_linear_avoids_the_unit_dimension_reduction(dtype):
    """A single row must never reach XLA:CPU as a multiply-reduce over [N, 1, K] (YNNPACK runs it
    20-60x slower than two rows): float32 becomes a matrix-vector dot, other dtypes get a zero
    second row. Checked on the lowered program; values against numpy."""
    from jaxalign.models.decode import linear

    rng = np.random.RandomState(4)
    x = jnp.asarray(rng.randn(1, 24), dtype)
    w = jnp.asarray(rng.randn(40, 24), dtype)
    reduces = _reduce_operand_shapes(linear, x, w)
    if dtype == "float32":
        assert reduces == [] and "stablehlo.dot_general" in jax.jit(linear).lower(x, w).as_text()
    else:
        assert reduces == ["40x2x24"]
    ref = np.asarray(x, np.float64) @ np.asarray(w, np.float64).T
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == "float32" else dict(rtol=2e-2, atol=5e-2)
    np.testing.assert_allclose(np.asarray(linear(x, w), np.float64), ref, **tol)
    # Two rows keep the streaming multiply-reduce (the reference the fix is measured against).
    assert _reduce_operand_shapes(linear, jnp.concatenate([x, x]), w) == ["40x2x24"]


def _reduce_operand_shapes(fn, *args) -> list[str]:
    """Operand shapes ("NxMxK", element type dropped) of the reductions in `fn`'s lowered StableHLO."""
    text = jax.jit(fn).lower(*args).as_text()
    return re.findall(r"stablehlo\.reduce\(.*: \(tensor<((?:\d+x)*\d+)x[a-z]", text)


def test_decode_weights_are_stored_in_the_compute_dtype_with_unchanged_logits():
    """bf16 compute: the decode layout holds bf16 matrices (cast once, norms as stored), and its
    logits are bit-identical to float32-stored weights cast at every matmul. (The parameters are
    first rounded to bf16 values: XLA may keep excess precision and skip a per-matmul f32 -> bf16
    cast, so with arbitrary f32 weights the old path computed partly in f32.)"""
    model = models.replace_config(tiny(qk_norm=True, qkv_bias=True), dtype="bfloat16")
    graphdef, state = nnx.split(model)
    model = nnx.merge(graphdef, jax.tree.map(lambda x: x.astype(jnp.bfloat16).astype(x.dtype), state))
    w16, w32 = models.prepare_decode_weights(model), models.prepare_decode_weights(model, jnp.float32)
    for name in ("qkv", "qkv_bias", "o", "gate_up", "down"):
        assert w16.layers[0][name].dtype == jnp.bfloat16 and w32.layers[0][name].dtype == jnp.float32
    assert w16.embed.dtype == w16.head.dtype == jnp.bfloat16
    assert w16.layers[0]["input_norm"].dtype == w16.final_norm.dtype == jnp.float32
    ids = np.random.RandomState(3).randint(0, 61, (2, 7)).astype(np.int32)
    pos = np.tile(np.arange(7, dtype=np.int32), (2, 1))
    run = jax.jit(lambda w, c: models.decode_forward(model.config, w, ids, c, attention_mask_BC=ids >= 0,
                                                     positions_BC=pos)[0])
    cache = models.init_cache(model.config, 2, 16)
    np.testing.assert_array_equal(np.asarray(run(w16, cache)), np.asarray(run(w32, cache)))


def test_kv_cache_dtype_is_configurable_and_bf16_by_default_on_accelerators():
    from jaxalign.models.decode import kv_cache_dtype

    config = ModelConfig.tiny(vocab_size=61, num_layers=2)
    assert kv_cache_dtype(config, "cpu") == jnp.float32  # the compute dtype on CPU
    assert kv_cache_dtype(config, "tpu") == kv_cache_dtype(config, "gpu") == jnp.bfloat16
    wide = models.replace_config(tiny(), kv_cache_dtype="bfloat16")
    assert kv_cache_dtype(wide.config, "cpu") == jnp.bfloat16
    cache = models.init_cache(wide.config, 2, 16)
    assert cache.k[0].dtype == cache.v[0].dtype == jnp.bfloat16
    # float32 compute over a bfloat16 cache: the cached keys/values are rounded to 8 mantissa bits,
    # so the logits move by about that much relative to their scale and no more.
    ids = np.random.RandomState(4).randint(0, 61, (2, 9)).astype(np.int32)
    full = np.asarray(models.forward(wide, ids))
    logits, cache = models.jit_forward_cached(wide, ids[:, :5], cache)
    steps = [np.asarray(logits)]
    for t in range(5, 9):
        logits, cache = models.jit_forward_cached(wide, ids[:, t:t + 1], cache,
                                                  positions=np.full((2, 1), t, np.int32))
        steps.append(np.asarray(logits))
    cached = np.concatenate(steps, axis=1)
    scale = np.abs(full).max()
    assert np.abs(cached - full).max() <= 2**-7 * scale
    assert not np.array_equal(cached, full)  # the bf16 cache is really in use
