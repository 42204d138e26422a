"""Primitives of the decoder: RMSNorm, rotary embeddings, grouped-query attention, SwiGLU.

Shape glossary: B batch, T query tokens, S key slots, D embed, N query heads, K kv heads,
G = N // K, H head_dim, F mlp width, V vocab.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxalign.models import attention_ops
from jaxalign.models.attention_ops import MASK_VALUE
from jaxalign.models.config import ModelConfig
from jaxalign.sharding import constrain


def param(rngs: nnx.Rngs, shape: tuple[int, ...], axes: tuple[str, ...], dtype, *,
          fan_in: int | None = None, std: float | None = None, init: str = "normal") -> nnx.Param:
    """A parameter with logical `axes`; "normal" is a truncated normal with standard deviation
    `std` (default 1/sqrt(fan_in), fan_in defaulting to the first dimension)."""
    if init == "ones":
        value = jnp.ones(shape, dtype)
    elif init == "zeros":
        value = jnp.zeros(shape, dtype)
    else:
        std = std if std is not None else 1.0 / math.sqrt(fan_in or shape[0])
        value = (std * jax.random.truncated_normal(rngs.params(), -2.0, 2.0, shape)).astype(dtype)
    return nnx.Param(value, axes=axes)


class RMSNorm(nnx.Module):
    """y = x / sqrt(mean(x^2) + eps) * scale, computed in float32 (as Hugging Face does)."""

    def __init__(self, dim: int, eps: float, *, dtype, axes=("embed",), rngs: nnx.Rngs):
        self.eps = eps
        self.scale = param(rngs, (dim,), axes, dtype, init="ones")

    def __call__(self, x: jax.Array) -> jax.Array:
        return rms_norm(x, self.scale.get_value(), self.eps)


def rms_norm(x: jax.Array, scale: jax.Array, eps: float) -> jax.Array:
    """RMSNorm over the last axis in float32, cast back, then scaled (Hugging Face's order)."""
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return y.astype(x.dtype) * scale.astype(x.dtype)


def rope_inv_freq(config: ModelConfig) -> np.ndarray:
    """Inverse rotary frequencies [H/2] in float32, with linear or Llama-3 scaling applied."""
    dim = config.head_dim
    exponent = np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)
    inv_freq = (1.0 / (np.float32(config.rope_theta) ** exponent)).astype(np.float32)
    scaling = config.rope_scaling
    if scaling.type == "linear":
        inv_freq = inv_freq / np.float32(scaling.factor)
    elif scaling.type == "llama3":
        old_len = scaling.original_max_position_embeddings
        low_wavelen = old_len / scaling.low_freq_factor
        high_wavelen = old_len / scaling.high_freq_factor
        wavelen = 2 * math.pi / inv_freq
        scaled = np.where(wavelen > low_wavelen, inv_freq / scaling.factor, inv_freq)
        smooth = (old_len / wavelen - scaling.low_freq_factor) / (
            scaling.high_freq_factor - scaling.low_freq_factor
        )
        smoothed = (1 - smooth) * scaled / scaling.factor + smooth * scaled
        medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        inv_freq = np.where(medium, smoothed, scaled).astype(np.float32)
    elif scaling.type == "yarn":
        inv_freq = _yarn_inv_freq(inv_freq, dim, config.rope_theta, scaling)
    return inv_freq


def _yarn_inv_freq(inv_freq: np.ndarray, dim: int, base: float, s) -> np.ndarray:
    """YaRN: frequencies that turn fewer than beta_slow times over the original context are divided
    by `factor`, those turning more than beta_fast times are kept, a linear ramp in between."""
    def dim_of(rotations):  # the dimension whose wavelength fits `rotations` times in the context
        return dim * math.log(s.original_max_position_embeddings / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = dim_of(s.beta_fast), dim_of(s.beta_slow)
    if s.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    high = high + 0.001 if low == high else high
    ramp = np.clip((np.arange(dim // 2, dtype=np.float32) - low) / (high - low), 0, 1)
    keep = (1 - ramp).astype(np.float32)  # 1: extrapolate (keep), 0: interpolate
    return (inv_freq / np.float32(s.factor) * (1 - keep) + inv_freq * keep).astype(np.float32)


def rope_attention_factor(config: ModelConfig) -> float:
    """The scale YaRN puts on cos and sin (1 for every other rope type)."""
    s = config.rope_scaling
    if s.type != "yarn":
        return 1.0
    if s.attention_factor is not None:
        return float(s.attention_factor)

    def mscale(scale, m=1.0):
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    if s.mscale and s.mscale_all_dim:
        return float(mscale(s.factor, s.mscale) / mscale(s.factor, s.mscale_all_dim))
    return float(mscale(s.factor))


def apply_rope(x_BTNH: jax.Array, positions_BT: jax.Array, inv_freq: np.ndarray, scale: float = 1.0) -> jax.Array:
    """Rotates halves (x1, x2) of each head by angle position * inv_freq (HF "rotate_half"); cos and
    sin carry `scale` (YaRN's attention factor, `rope_attention_factor`)."""
    angles = positions_BT.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)  # [B, T, H/2]
    cos = jnp.cos(angles)[:, :, None, :]
    sin = jnp.sin(angles)[:, :, None, :]
    if scale != 1.0:
        cos, sin = cos * scale, sin * scale
    x1, x2 = jnp.split(x_BTNH.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x_BTNH.dtype)


def attention(q_BTNH: jax.Array, k_BKSH: jax.Array, v_BKSH: jax.Array, mask_BTS: jax.Array, *,
              keys_transposed: bool = False) -> jax.Array:
    """Grouped-query softmax attention; `mask_BTS` is True where query t may attend slot s.

    Keys and values come head-major ([B, K, S, H]; keys as [B, K, H, S] when `keys_transposed`,
    the KV-cache layout, which makes q.k a plain [T*G, H] x [H, S] matmul). Scores are laid out
    [B, K, T*G, S] so each kv head's queries (all G of its query heads) form one matmul against
    its keys, with no transposes of the (possibly long) key/value buffers.
    """
    b, t, n, h = q_BTNH.shape
    k = k_BKSH.shape[1]
    g = n // k
    q = (q_BTNH * (1.0 / math.sqrt(h))).reshape(b, t, k, g, h).transpose(0, 2, 1, 3, 4).reshape(b, k, t * g, h)
    spec = "bkmh,bkhs->bkms" if keys_transposed else "bkmh,bksh->bkms"
    scores = jnp.einsum(spec, q, k_BKSH, preferred_element_type=jnp.float32)
    mask = jnp.repeat(mask_BTS, g, axis=1)[:, None]  # rows ordered (t, g) like the queries
    probs = jax.nn.softmax(jnp.where(mask, scores, MASK_VALUE), axis=-1).astype(v_BKSH.dtype)
    out = jnp.einsum("bkms,bksh->bkmh", probs, v_BKSH)
    return out.reshape(b, k, t, g, h).transpose(0, 2, 1, 3, 4).reshape(b, t, n, h)


class Attention(nnx.Module):
    """Multi-head attention with GQA, optional q/k/v/o biases and Qwen3 per-head q/k RMSNorm."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        c = config
        d, n, k, h = c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim
        dt = jnp.dtype(c.param_dtype)
        self.config = c
        self.q_proj = param(rngs, (d, n, h), ("embed", "heads", "head_dim"), dt, fan_in=d)
        self.k_proj = param(rngs, (d, k, h), ("embed", "kv_heads", "head_dim"), dt, fan_in=d)
        self.v_proj = param(rngs, (d, k, h), ("embed", "kv_heads", "head_dim"), dt, fan_in=d)
        self.o_proj = param(rngs, (n, h, d), ("heads", "head_dim", "embed"), dt, fan_in=n * h)
        if c.qkv_bias:
            self.q_bias = param(rngs, (n, h), ("heads", "head_dim"), dt, init="zeros")
            self.k_bias = param(rngs, (k, h), ("kv_heads", "head_dim"), dt, init="zeros")
            self.v_bias = param(rngs, (k, h), ("kv_heads", "head_dim"), dt, init="zeros")
        if c.o_bias:
            self.o_bias = param(rngs, (d,), ("embed",), dt, init="zeros")
        if c.qk_norm:
            self.q_norm = RMSNorm(h, c.rms_norm_eps, dtype=dt, axes=("head_dim",), rngs=rngs)
            self.k_norm = RMSNorm(h, c.rms_norm_eps, dtype=dt, axes=("head_dim",), rngs=rngs)

    def __call__(self, x_BTD, positions_BT, segment_ids_BT):
        """Causal self-attention over the T tokens of `x` within their segments (0 = padding);
        cached decoding: `models.decode`."""
        c = self.config
        cd = jnp.dtype(c.dtype)
        b, t, d = x_BTD.shape
        x = x_BTD.astype(cd).reshape(b * t, d)

        def proj(w, bias):
            # A plain 2D matmul on the (free) reshaped weight: XLA then never transposes weights.
            _, heads, h = w.shape
            y = (x @ w.get_value().astype(cd).reshape(d, heads * h)).reshape(b, t, heads, h)
            return y if bias is None else y + bias.get_value().astype(cd)

        bq, bk, bv = (self.q_bias, self.k_bias, self.v_bias) if c.qkv_bias else (None, None, None)
        q = constrain(proj(self.q_proj, bq), ("batch", "length", "act_heads", None))
        k = constrain(proj(self.k_proj, bk), ("batch", "length", "act_kv_heads", None))
        v = constrain(proj(self.v_proj, bv), ("batch", "length", "act_kv_heads", None))
        if c.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        inv_freq, scale = rope_inv_freq(c), rope_attention_factor(c)
        q = apply_rope(q, positions_BT, inv_freq, scale)
        k = apply_rope(k, positions_BT, inv_freq, scale)
        out = attention_ops.attention(q, k, v, segment_ids=segment_ids_BT, implementation=c.attention)
        n, h = c.num_heads, c.head_dim
        out = out.reshape(b * t, n * h) @ self.o_proj.get_value().astype(cd).reshape(n * h, d)
        if c.o_bias:
            out = out + self.o_bias.get_value().astype(cd)
        return out.reshape(b, t, d)


class MLP(nnx.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        c = config
        d, f = c.hidden_size, c.intermediate_size
        dt = jnp.dtype(c.param_dtype)
        self.config = c
        self.gate_proj = param(rngs, (d, f), ("embed", "mlp"), dt)
        self.up_proj = param(rngs, (d, f), ("embed", "mlp"), dt)
        self.down_proj = param(rngs, (f, d), ("mlp", "embed"), dt)
        if c.mlp_bias:
            self.gate_bias = param(rngs, (f,), ("mlp",), dt, init="zeros")
            self.up_bias = param(rngs, (f,), ("mlp",), dt, init="zeros")
            self.down_bias = param(rngs, (d,), ("embed",), dt, init="zeros")

    def __call__(self, x_BTD: jax.Array) -> jax.Array:
        c = self.config
        cd = jnp.dtype(c.dtype)
        x = x_BTD.astype(cd)
        gate = x @ self.gate_proj.get_value().astype(cd)
        up = x @ self.up_proj.get_value().astype(cd)
        if c.mlp_bias:
            gate = gate + self.gate_bias.get_value().astype(cd)
            up = up + self.up_bias.get_value().astype(cd)
        h = constrain(jax.nn.silu(gate) * up, ("batch", "length", "act_mlp"))
        out = h @ self.down_proj.get_value().astype(cd)
        if c.mlp_bias:
            out = out + self.down_bias.get_value().astype(cd)
        return out
