"""One attention entry point, `attention(q, k, v, segment_ids=..., implementation=...)`, per backend.

Shapes: q `[B,T,N,H]`, k and v `[B,S,K,H]` (grouped-query: N a multiple of K), `segment_ids`
`[B,T]` int32 where 0 marks padding and equal positive ids attend to each other (a packed row holds
several segments); with S != T, `kv_segment_ids` `[B,S]` gives the keys' ids. `causal=True` lets
query t see keys s <= t + (S - T) (queries are the last T of the S positions). Padding queries
return zeros. No `[B,T,S]` mask is built: each implementation derives its mask from the ids.

Implementations:
- "xla": query blocks of `block_q` rows against the keys they can see, masks built per block from
  ids and iota (the CPU default; XLA partitions it under a mesh like any other op).
- "splash": TPU Pallas splash attention (`jax.experimental.pallas.ops.tpu.splash_attention`), the
  MQA kernel once per kv head (its G query heads share the keys), causal mask plus segment ids.
- "pallas_gpu": `jax.experimental.pallas.ops.gpu.attention.mha` with segment ids (packed rows on
  GPU); keys are repeated to N heads, which that kernel needs.
- "cudnn": `jax.nn.dot_product_attention(implementation="cudnn")` with sequence lengths: right
  padding and one segment per row only (use "pallas_gpu" for packed or left-padded rows).
On CPU the Pallas kernels run in interpret mode (`interpret=None` picks it), which is how they are
tested here. Sequences are padded to the kernels' block multiple with id 0 and cut back after.
Under a mesh (`jaxalign.sharding.use_mesh`) the Pallas kernels run inside `shard_map`, rows over the
rules' batch axes and heads over "tensor"; the XLA path is left to XLA's partitioner.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from jaxalign import sharding

IMPLEMENTATIONS = ("xla", "splash", "pallas_gpu", "cudnn")
# A large finite negative instead of -inf: a fully masked row then yields a uniform distribution
# instead of NaN, and NaNs cannot leak into gradients through masked rows.
MASK_VALUE = -0.7 * float(np.finfo(np.float32).max)


def resolve(implementation: str | None, backend: str | None = None) -> str:
    """The implementation "auto"/None means on `backend` (default: JAX's): TPU splash, GPU the Pallas
    kernel (it handles packed and left-padded rows, which cuDNN's lengths cannot), CPU "xla"."""
    if implementation in (None, "auto"):
        backend = backend or jax.default_backend()
        return {"tpu": "splash", "gpu": "pallas_gpu", "cuda": "pallas_gpu"}.get(backend, "xla")
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"attention implementation {implementation!r}: expected auto or one of "
                         f"{', '.join(IMPLEMENTATIONS)}")
    return implementation


def attention(q: jax.Array, k: jax.Array, v: jax.Array, *, segment_ids: jax.Array | None = None,
              kv_segment_ids: jax.Array | None = None, causal: bool = True,
              implementation: str | None = None, interpret: bool | None = None,
              block_q: int | None = None) -> jax.Array:
    """Softmax(q k^T / sqrt(H)) v over the keys each query may see; see the module docstring."""
    b, t, n, h = q.shape
    s, kh = k.shape[1], k.shape[2]
    if k.shape != (b, s, kh, h) or v.shape != k.shape or n % kh:
        raise ValueError(f"attention shapes: q {q.shape}, k {k.shape}, v {v.shape} "
                         "(want q [B,T,N,H], k = v [B,S,K,H], N a multiple of K)")
    q_ids = jnp.ones((b, t), jnp.int32) if segment_ids is None else segment_ids.astype(jnp.int32)
    if kv_segment_ids is None:
        if s != t:
            raise ValueError(f"attention: {s} keys for {t} queries needs kv_segment_ids [B,S]")
        kv_ids = q_ids
    else:
        kv_ids = kv_segment_ids.astype(jnp.int32)
    impl = resolve(implementation)
    if interpret is None:
        interpret = jax.default_backend() == "cpu"
    if impl == "xla":
        block_q = block_q or max(128, -(-t // 16))  # at most 16 query blocks
        if jax.default_backend() == "cpu" and sharding.current() is None and b > 1:
            # One row at a time keeps a row's score blocks in cache: on CPU, materialising the
            # whole batch's scores costs more than the matmuls. Elsewhere the batch stays whole.
            out = jax.lax.map(lambda a: _xla(*(x[None] for x in a), causal, block_q)[0],
                              (q, k, v, q_ids, kv_ids))
        else:
            out = _xla(q, k, v, q_ids, kv_ids, causal, block_q)
    else:
        if s != t and impl != "cudnn":
            raise ValueError(f"attention implementation {impl!r} takes S == T (got T={t}, S={s}); "
                             "use 'xla' for queries against a longer cache")
        kernel = {"splash": functools.partial(_splash, interpret=interpret),
                  "pallas_gpu": functools.partial(_pallas_gpu, interpret=interpret),
                  "cudnn": _cudnn}[impl]
        out = _sharded(functools.partial(kernel, causal=causal), q, k, v, q_ids, kv_ids)
    return jnp.where((q_ids > 0)[:, :, None, None], out, 0).astype(q.dtype)


def _xla(q, k, v, q_ids, kv_ids, causal, block_q):
    """Query blocks against keys [0, end) of the block's last query (all keys when not causal)."""
    b, t, n, h = q.shape
    s, kh = k.shape[1], k.shape[2]
    g = n // kh
    offset = s - t
    # Head-major keys and values, transposed once: each kv head's G query heads of a block then form
    # one [T_b * G, H] x [H, S] matmul against its keys with no per-block transposes of the keys.
    k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B, K, S, H]
    outs = []
    for start in range(0, t, block_q):
        end = min(start + block_q, t)
        tb = end - start
        stop = min(s, end + offset) if causal else s
        qb = (q[:, start:end] * (1.0 / math.sqrt(h))).reshape(b, tb, kh, g, h)
        qb = qb.transpose(0, 2, 1, 3, 4).reshape(b, kh, tb * g, h)  # rows ordered (t, g)
        scores = jnp.einsum("bkmh,bksh->bkms", qb, k[:, :, :stop], preferred_element_type=jnp.float32)
        mask = q_ids[:, start:end, None] == kv_ids[:, None, :stop]
        if causal:
            qpos = jnp.arange(start, end)[:, None] + offset
            mask = mask & (qpos >= jnp.arange(stop)[None, :])[None]
        mask = jnp.repeat(mask, g, axis=1)[:, None]  # [B, 1, T_b * G, S]
        scores = jnp.where(mask, scores, MASK_VALUE)
        # Softmax with the normalisation deferred to the output ([T_b * G, H] divides instead of
        # [T_b * G, S]), as flash attention does: on CPU the elementwise work rivals the matmuls.
        weights = jnp.exp(scores - jnp.max(scores, axis=-1, keepdims=True))
        total = jnp.sum(weights, axis=-1, keepdims=True)
        out = jnp.einsum("bkms,bksh->bkmh", weights.astype(v.dtype), v[:, :, :stop],
                         preferred_element_type=jnp.float32) / total
        outs.append(out.reshape(b, kh, tb, g, h).transpose(0, 2, 1, 3, 4).reshape(b, tb, n, h))
    return jnp.concatenate(outs, axis=1)


def _pad_to(x, multiple, axis):
    size = x.shape[axis]
    extra = -size % multiple
    if not extra:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, extra)
    return jnp.pad(x, widths)


def _splash(q, k, v, q_ids, kv_ids, *, causal, interpret):
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm

    b, t, n, h = q.shape
    kh = k.shape[2]
    g = n // kh
    block = min(512, -(-t // 128) * 128)  # one block up to 512 tokens, else 512-token blocks
    q, k, v = (_pad_to(x, block, 1) for x in (q, k, v))
    q_ids, kv_ids = _pad_to(q_ids, block, 1), _pad_to(kv_ids, block, 1)
    tp = q.shape[1]
    head_mask = sm.CausalMask((tp, tp)) if causal else sm.FullMask((tp, tp))
    sizes = sk.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block, block_q_dkv=block,
                          block_kv_dkv=block, block_kv_dkv_compute=block, block_q_dq=block,
                          block_kv_dq=block)
    kernel = sk.make_splash_mqa_single_device(sm.MultiHeadMask([head_mask] * g), block_sizes=sizes,
                                              interpret=interpret)
    q_bkgth = (q * (1.0 / math.sqrt(h))).reshape(b, tp, kh, g, h).transpose(0, 2, 3, 1, 4)
    k_bkth, v_bkth = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)

    def row(qr, kr, vr, qi, ki):  # one row, all kv heads: the MQA kernel per kv head
        ids = sk.SegmentIds(q=qi, kv=ki)
        return jax.vmap(lambda a, c, d: kernel(a, c, d, segment_ids=ids))(qr, kr, vr)

    out = jax.vmap(row)(q_bkgth, k_bkth, v_bkth, q_ids, kv_ids)  # [B,K,G,T,H]
    return out.transpose(0, 3, 1, 2, 4).reshape(b, tp, n, h)[:, :t]


def _pallas_gpu(q, k, v, q_ids, kv_ids, *, causal, interpret):
    from jax.experimental.pallas.ops.gpu import attention as gpu_attention

    b, t, n, h = q.shape
    g = n // k.shape[2]
    block = 64 if t <= 64 else 128
    sizes = gpu_attention.BlockSizes(block_q=block, block_k=block, block_q_dkv=min(block, 64),
                                     block_kv_dkv=min(block, 64), block_q_dq=min(block, 64),
                                     block_kv_dq=min(block, 64))
    q, k, v = (_pad_to(x, block, 1) for x in (q, k, v))
    ids = _pad_to(q_ids, block, 1)
    k, v = jnp.repeat(k, g, axis=2), jnp.repeat(v, g, axis=2)
    out = gpu_attention.mha(q, k, v, ids, sm_scale=1.0 / math.sqrt(h), causal=causal,
                            block_sizes=sizes, interpret=interpret)
    return out[:, :t]


def _cudnn(q, k, v, q_ids, kv_ids, *, causal):
    """Right-padded single-segment rows: lengths are the counts of non-zero ids."""
    q_len = jnp.sum(q_ids > 0, axis=1).astype(jnp.int32)
    kv_len = jnp.sum(kv_ids > 0, axis=1).astype(jnp.int32)
    return jax.nn.dot_product_attention(q, k, v, is_causal=causal, query_seq_lengths=q_len,
                                        key_value_seq_lengths=kv_len, implementation="cudnn")


def _sharded(kernel, q, k, v, q_ids, kv_ids):
    """`kernel` inside shard_map under the current mesh: rows over the batch axes, heads over
    "tensor" when both head counts divide by it; outside a mesh, the kernel itself."""
    placed = sharding.current()
    if placed is None:
        return kernel(q, k, v, q_ids, kv_ids)
    mesh, rules = placed
    rows = sharding.logical_to_spec(("batch",), rules, q.shape[:1], mesh)[0]
    heads = "tensor" if "tensor" in mesh.axis_names and mesh.shape["tensor"] > 1 else None
    if heads and (q.shape[2] % mesh.shape[heads] or k.shape[2] % mesh.shape[heads]):
        heads = None
    x_spec = PartitionSpec(rows, None, heads, None)
    id_spec = PartitionSpec(rows, None)
    return jax.shard_map(kernel, mesh=mesh, in_specs=(x_spec, x_spec, x_spec, id_spec, id_spec),
                         out_specs=x_spec, check_vma=False)(q, k, v, q_ids, kv_ids)
