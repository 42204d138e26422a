"""Paged KV cache (`jaxalign.sampling.paged`): ragged queries over rows whose tokens live in shuffled
fixed-size pages equal dense attention over each row's contiguous keys, and JAX's reference for the
TPU ragged paged attention kernel. The kernel itself does not run on CPU in jax 0.10.2: it takes no
`interpret` argument, and under `pltpu.force_tpu_interpret_mode()` it stops with "TPU version must be 4
or higher"."""

import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.pallas.ops.tpu.ragged_paged_attention.kernel import ref_ragged_paged_attention

from jaxalign.models.attention_ops import attention
from jaxalign.sampling import paged

PAGE = 4
Q_LENS, KV_LENS = (1, 5, 3, 0), (7, 21, 16, 9)  # a decode step, two prefill chunks, an idle row


def _case(n, k, h=16, pages_per_row=6, seed=0):
    rng = np.random.RandomState(seed)
    rows = len(Q_LENS)
    num_pages = rows * pages_per_row + 3
    table = rng.permutation(num_pages)[:rows * pages_per_row].reshape(rows, pages_per_row).astype(np.int32)
    keys = [rng.randn(s, k, h).astype(np.float32) for s in KV_LENS]
    values = [rng.randn(s, k, h).astype(np.float32) for s in KV_LENS]
    # every row's tokens written slot by slot through `paged.write`
    row_ids = np.concatenate([np.full(s, r) for r, s in enumerate(KV_LENS)]).astype(np.int32)
    slots = np.concatenate([np.arange(s) for s in KV_LENS]).astype(np.int32)
    pages = jnp.zeros((num_pages, PAGE, 2 * k, h), jnp.float32)
    pages = paged.write(pages, jnp.asarray(table), jnp.asarray(row_ids), jnp.asarray(slots),
                        jnp.asarray(np.concatenate(keys)), jnp.asarray(np.concatenate(values)))
    total = sum(Q_LENS)
    q = rng.randn(total + 3, n, h).astype(np.float32)  # 3 padding tokens at the end
    cu = np.concatenate([[0], np.cumsum(Q_LENS)]).astype(np.int32)
    return q, pages, np.asarray(KV_LENS, np.int32), table, cu, keys, values


@pytest.mark.parametrize("n,k", [(4, 4), (4, 2), (8, 2)])
def test_equals_dense_attention_per_row(n, k):
    q, pages, lens, table, cu, keys, values = _case(n, k)
    got = np.asarray(paged.paged_attention(jnp.asarray(q), pages, jnp.asarray(lens), jnp.asarray(table),
                                           jnp.asarray(cu), jnp.asarray([len(Q_LENS)], np.int32)))
    for r, (ql, kl) in enumerate(zip(Q_LENS, KV_LENS)):
        if not ql:
            continue
        qr, kr, vr = (jnp.asarray(x[None]) for x in (q[cu[r]:cu[r + 1]], keys[r], values[r]))
        want = attention(qr, kr, vr, segment_ids=jnp.ones((1, ql), jnp.int32),
                         kv_segment_ids=jnp.ones((1, kl), jnp.int32), implementation="xla")
        np.testing.assert_allclose(got[cu[r]:cu[r + 1]], np.asarray(want)[0], rtol=1e-5, atol=1e-5)
    assert np.all(got[cu[-1]:] == 0)  # padding tokens


def test_equals_the_tpu_kernels_reference():
    q, pages, lens, table, cu, _, _ = _case(8, 2, h=128, seed=1)
    total = int(cu[-1])
    num = jnp.asarray([len(Q_LENS)], np.int32)
    want = ref_ragged_paged_attention(jnp.asarray(q[:total]), pages, jnp.asarray(lens), jnp.asarray(table),
                                      jnp.asarray(cu), num, sm_scale=128 ** -0.5)
    got = paged.paged_attention(jnp.asarray(q[:total]), pages, jnp.asarray(lens), jnp.asarray(table),
                                jnp.asarray(cu), num)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


def test_write_skips_padding_tokens_and_reads_back():
    pages = jnp.zeros((3, PAGE, 2, 2), jnp.float32)
    table = jnp.asarray([[2, 0]], np.int32)
    k = jnp.arange(1, 4, dtype=jnp.float32)[:, None, None] * jnp.ones((3, 1, 2))
    out = np.asarray(paged.write(pages, table, jnp.asarray([0, -1, 0]), jnp.asarray([3, 0, 4]), k, -k))
    assert np.all(out[2, 3, 0] == 1) and np.all(out[2, 3, 1] == -1)  # slot 3: page 2, offset 3
    assert np.all(out[0, 0, 0] == 3) and np.all(out[0, 0, 1] == -3)  # slot 4: page 0, offset 0
    assert np.count_nonzero(out) == 2 * 2 * 2  # the padding token wrote nothing
