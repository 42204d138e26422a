"""Page pool bookkeeping (`jaxalign.sampling.pages`): rows grow and free pages, a group's samples
share its prompt's full pages and copy the partial one, and attention over a shared prompt equals
attention over a privately written one."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxalign.sampling import paged
from jaxalign.sampling.pages import OutOfPages, PageAllocator


def test_rows_grow_by_pages_and_return_them_when_they_end():
    pool = PageAllocator(num_pages=6, page_size=4, max_pages_per_row=4)
    assert pool.reserve(0, 5) == [0, 1]  # 5 tokens: 2 pages
    assert pool.reserve(0, 8) == []  # still 2 pages
    assert pool.reserve(1, 9) == [2, 3, 4]
    assert pool.num_free == 1
    assert pool.reserve(0, 9) == [5]
    with pytest.raises(OutOfPages, match="need 1 pages, 0 free of 6"):
        pool.reserve(1, 13)
    assert pool.rows[1] == [2, 3, 4]  # a refused request takes nothing
    pool.release(0)
    assert pool.num_free == 3
    with pytest.raises(OutOfPages, match="row 2: 17 tokens need 5 pages, a row holds at most 4"):
        pool.reserve(2, 17)
    np.testing.assert_array_equal(pool.table([1, 0]), [[2, 3, 4, 0], [0, 0, 0, 0]])


def test_samples_share_full_pages_copy_the_partial_one_and_free_last():
    pool = PageAllocator(num_pages=8, page_size=4, max_pages_per_row=3)
    pool.reserve(0, 6)  # prompt of 6 tokens: pages [0, 1], page 1 half full
    copies = pool.share(0, 1, 6)
    assert pool.rows[1][0] == pool.rows[0][0] and copies == [(1, 2)] and pool.rows[1] == [0, 2]
    assert pool.share(0, 2, 4) == [] and pool.rows[2] == [0]  # a page boundary: nothing to copy
    pool.release(0)
    pool.release(1)
    assert 0 in pool.rows[2] and pool.num_free == 8 - 1  # page 0 stays while row 2 holds it
    pool.release(2)
    assert pool.num_free == 8


def test_attention_over_a_shared_prompt_equals_a_private_copy():
    rng = np.random.RandomState(0)
    k_heads, h, page = 2, 16, 4
    prompt_k, prompt_v = rng.randn(6, k_heads, h).astype(np.float32), rng.randn(6, k_heads, h).astype(np.float32)
    tail_k, tail_v = rng.randn(3, k_heads, h).astype(np.float32), rng.randn(3, k_heads, h).astype(np.float32)

    def write(pages, table, row, start, k, v):
        n = len(k)
        return paged.write(pages, jnp.asarray(table), jnp.full((n,), row, jnp.int32),
                           jnp.arange(start, start + n, dtype=jnp.int32), jnp.asarray(k), jnp.asarray(v))

    # shared: row 0 prefills the prompt, row 1 shares it (copy of the partial page), both diverge
    pool = PageAllocator(num_pages=8, page_size=page, max_pages_per_row=3)
    pool.reserve(0, 6)
    pages = write(jnp.zeros((8, page, 2 * k_heads, h)), pool.table([0]), 0, 0, prompt_k, prompt_v)
    pages = paged.copy_pages(pages, jnp.asarray(pool.share(0, 1, 6), jnp.int32))
    pool.reserve(0, 9), pool.reserve(1, 9)
    pages = write(pages, pool.table([0, 1]), 0, 6, tail_k, tail_v)
    pages = write(pages, pool.table([0, 1]), 1, 6, -tail_k, -tail_v)
    # private: each row writes the whole sequence itself
    own = PageAllocator(num_pages=8, page_size=page, max_pages_per_row=3)
    own.reserve(0, 9), own.reserve(1, 9)
    mine = jnp.zeros((8, page, 2 * k_heads, h))
    for row, sign in ((0, 1), (1, -1)):
        mine = write(mine, own.table([0, 1]), row, 0, np.concatenate([prompt_k, sign * tail_k]),
                     np.concatenate([prompt_v, sign * tail_v]))
    q = jnp.asarray(rng.randn(2, 4, h).astype(np.float32))  # one decode query per row
    args = (jnp.asarray([9, 9], np.int32),)
    tail = (jnp.asarray([0, 1, 2], np.int32), jnp.asarray(2, np.int32))
    shared = paged.paged_attention(q, pages, *args, jnp.asarray(pool.table([0, 1])), *tail)
    private = paged.paged_attention(q, mine, *args, jnp.asarray(own.table([0, 1])), *tail)
    np.testing.assert_allclose(np.asarray(shared), np.asarray(private), rtol=1e-6, atol=1e-6)
    assert pool.num_free == own.num_free + 1  # the shared prompt's full page is held once


def test_paged_prefill_and_decode_equal_the_full_forward():
    """Two rows of different lengths prefilled in one ragged chunk, then decoded a token per row per
    step over shuffled pages: every logit equals the model's full forward pass."""
    from jaxalign import models
    from jaxalign.models import ModelConfig

    model = models.init_model(ModelConfig.tiny(vocab_size=61, num_layers=2, qk_norm=True), seed=1)
    config, weights = model.config, models.prepare_decode_weights(model)
    seqs = [np.random.RandomState(r).randint(0, 61, n).astype(np.int32) for r, n in ((0, 8), (1, 12))]
    prompt = (5, 9)
    full = [np.asarray(models.forward(model, s[None]))[0] for s in seqs]
    pool = PageAllocator(num_pages=9, page_size=4, max_pages_per_row=3)
    pool._free = [8, 1, 6, 3, 0, 7, 2, 5, 4]  # shuffled: rows get interleaved, non-contiguous pages
    pages = paged.init_pages(config, 9, 4)
    step = jax.jit(lambda *a: paged.paged_forward(config, weights, *a))

    def run(chunks, lengths, pages):
        for r, n in enumerate(lengths):
            pool.reserve(r, n)
        ids = np.concatenate([s[a:b] for s, (a, b) in zip(seqs, chunks)] + [np.zeros(2, np.int32)])  # 2 pads
        pos = np.concatenate([np.arange(a, b) for a, b in chunks] + [np.zeros(2, np.int64)]).astype(np.int32)
        cu = np.concatenate([[0], np.cumsum([b - a for a, b in chunks])]).astype(np.int32)
        logits, pages = step(jnp.asarray(ids), jnp.asarray(pos), pages, jnp.asarray(lengths, np.int32),
                             jnp.asarray(pool.table([0, 1])), jnp.asarray(cu), jnp.asarray(2, np.int32))
        return np.asarray(logits), cu, pages

    logits, cu, pages = run([(0, prompt[0]), (0, prompt[1])], prompt, pages)
    for r in range(2):
        np.testing.assert_allclose(logits[cu[r]:cu[r + 1]], full[r][:prompt[r]], atol=2e-5, rtol=1e-5)
    for t in range(3):
        lengths = [p + t + 1 for p in prompt]
        logits, _, pages = run([(n - 1, n) for n in lengths], lengths, pages)
        for r in range(2):
            np.testing.assert_allclose(logits[r], full[r][lengths[r] - 1], atol=2e-5, rtol=1e-5)
