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

from jaxalign.models.config import ModelConfig
from jaxalign.sharding import constrain

# A large finite negative instead of -inf: a fully masked row (a pad query) then yields a uniform
# distribution instead of NaN, and NaNs cannot leak into gradients through masked rows.
MASK_VALUE = -0.7 * float(np.finfo(np.float32).max)


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
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return y.astype(x.dtype) * self.scale.get_value().astype(x.dtype)


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
    return inv_freq


def apply_rope(x_BTNH: jax.Array, positions_BT: jax.Array, inv_freq: np.ndarray) -> jax.Array:
    """Rotates halves (x1, x2) of each head by angle position * inv_freq (HF "rotate_half")."""
    angles = positions_BT.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)  # [B, T, H/2]
    cos = jnp.cos(angles)[:, :, None, :]
    sin = jnp.sin(angles)[:, :, None, :]
    x1, x2 = jnp.split(x_BTNH.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x_BTNH.dtype)


def attention(q_BTNH: jax.Array, k_BSKH: jax.Array, v_BSKH: jax.Array, mask_BTS: jax.Array) -> jax.Array:
    """Grouped-query softmax attention; `mask_BTS` is True where query t may attend slot s."""
    b, t, n, h = q_BTNH.shape
    k = k_BSKH.shape[2]
    q = q_BTNH.reshape(b, t, k, n // k, h)
    scores = jnp.einsum("btkgh,bskh->bkgts", q, k_BSKH, preferred_element_type=jnp.float32)
    scores = scores * (1.0 / math.sqrt(h))
    scores = jnp.where(mask_BTS[:, None, None, :, :], scores, MASK_VALUE)
    probs = jax.nn.softmax(scores, axis=-1).astype(v_BSKH.dtype)
    out = jnp.einsum("bkgts,bskh->btkgh", probs, v_BSKH)
    return out.reshape(b, t, n, h)


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

    def __call__(self, x_BTD, positions_BT, mask_BTS, kv=None, write_index=None):
        """Returns (out [B, T, D], (k, v) cache slots or None).

        With `kv = (k_BSKH, v_BSKH)` the new keys/values are written at slot `write_index` and the
        queries attend over all S slots (masked by `mask_BTS`); otherwise over the T new tokens.
        """
        c = self.config
        cd = jnp.dtype(c.dtype)
        x = x_BTD.astype(cd)

        def proj(w, bias):
            y = jnp.einsum("btd,dnh->btnh", x, w.get_value().astype(cd))
            return y if bias is None else y + bias.get_value().astype(cd)

        bq, bk, bv = (self.q_bias, self.k_bias, self.v_bias) if c.qkv_bias else (None, None, None)
        q = constrain(proj(self.q_proj, bq), ("batch", "length", "act_heads", None))
        k = constrain(proj(self.k_proj, bk), ("batch", "length", "act_kv_heads", None))
        v = constrain(proj(self.v_proj, bv), ("batch", "length", "act_kv_heads", None))
        if c.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        inv_freq = rope_inv_freq(c)
        q = apply_rope(q, positions_BT, inv_freq)
        k = apply_rope(k, positions_BT, inv_freq)
        new_kv = None
        if kv is not None:
            k_cache, v_cache = kv
            start = (0, write_index, 0, 0)
            k = jax.lax.dynamic_update_slice(k_cache, k.astype(k_cache.dtype), start)
            v = jax.lax.dynamic_update_slice(v_cache, v.astype(v_cache.dtype), start)
            new_kv = (k, v)
            k, v = k.astype(cd), v.astype(cd)
        out = attention(q, k, v, mask_BTS)
        out = jnp.einsum("btnh,nhd->btd", out, self.o_proj.get_value().astype(cd))
        if c.o_bias:
            out = out + self.o_bias.get_value().astype(cd)
        return out, new_kv


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
