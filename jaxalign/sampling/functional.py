"""Pure sampling primitives: filtered sampling from logits and stop detection."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

NEG_INF = -1e30


@dataclasses.dataclass(frozen=True, kw_only=True)
class SamplingConfig:
    """How tokens are drawn from the logits (hashable: a static argument of the jitted loop)."""

    temperature: float = 1.0
    """Softmax temperature; 0 means greedy (argmax)."""
    top_p: float = 1.0
    """Nucleus sampling: keep the smallest set of tokens whose probability reaches top_p."""
    top_k: int = 0
    """Keep the k most likely tokens; 0 disables."""

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"SamplingConfig.temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"SamplingConfig.top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"SamplingConfig.top_k must be >= 0, got {self.top_k}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def filter_logits(logits_BV: jax.Array, config: SamplingConfig) -> jax.Array:
    """Temperature-scaled logits with everything outside top-k / top-p set to -inf (float32)."""
    x = logits_BV.astype(jnp.float32)
    if config.greedy:
        return x
    x = x / config.temperature
    if config.top_k > 0 and config.top_k < x.shape[-1]:
        kth = jax.lax.top_k(x, config.top_k)[0][..., -1:]
        x = jnp.where(x < kth, NEG_INF, x)
    if config.top_p < 1.0:
        sorted_x = jnp.sort(x, axis=-1)[..., ::-1]
        probs = jax.nn.softmax(sorted_x, axis=-1)
        # Mass strictly before each sorted token; keep tokens whose preceding mass < top_p (the
        # first token is always kept). Ties at the cut-off value are kept together.
        before = jnp.cumsum(probs, axis=-1) - probs
        keep = before < config.top_p
        cutoff = jnp.min(jnp.where(keep, sorted_x, jnp.inf), axis=-1, keepdims=True)
        x = jnp.where(x < cutoff, NEG_INF, x)
    return x


def sample(logits_BV: jax.Array, key: jax.Array, config: SamplingConfig) -> tuple[jax.Array, jax.Array]:
    """Draws one token per row; returns (tokens [B] int32, log-probs [B] float32).

    The log-prob is under the sampling distribution (temperature, top-k, top-p applied). Greedy
    decoding reports the log-prob under the unmodified model distribution (temperature 1).
    """
    x = filter_logits(logits_BV, config)
    m = jnp.max(x, axis=-1, keepdims=True)
    if config.greedy:
        tokens = jnp.argmax(x, axis=-1).astype(jnp.int32)
        total = jnp.sum(jnp.exp(x - m), axis=-1)
    else:
        tokens, total = _inverse_cdf(x - m, key)
    picked = jnp.take_along_axis(x, tokens[:, None], axis=-1)[:, 0]
    # XLA fuses exp(x - m) with the division by the temperature, so the max token's own term can
    # come out a few ulps below 1 and `total` below 1: a near-certain token would then get a
    # log-prob of +1e-6. A log-prob is never positive; the clamp removes only that round-off.
    return tokens, jnp.minimum(picked - m[:, 0] - jnp.log(total), 0.0)


def _inverse_cdf(shifted_BV: jax.Array, key: jax.Array, block: int = 256) -> tuple[jax.Array, jax.Array]:
    """Inverse-CDF sampling from unnormalised log-probs (max already subtracted).

    One uniform per row instead of the V Gumbel variates `jax.random.categorical` draws, and a
    two-level search (cumulative mass of 256-token blocks, then within the chosen block) instead
    of a cumulative sum over the whole vocabulary: both dominate a small-batch decode step on CPU.
    Returns (tokens [B], total mass [B]).
    """
    b, v = shifted_BV.shape
    nb = -(-v // block)
    p = jnp.exp(shifted_BV)
    p = jnp.pad(p, ((0, 0), (0, nb * block - v))).reshape(b, nb, block)
    cum_blocks = jnp.cumsum(p.sum(-1), axis=-1)  # [B, nb]
    total = cum_blocks[:, -1]
    u = jax.random.uniform(key, (b, 1)) * total[:, None]
    blk = jnp.minimum(jnp.sum(cum_blocks <= u, axis=-1), nb - 1)
    before = jnp.where(blk > 0, jnp.take_along_axis(cum_blocks, jnp.maximum(blk - 1, 0)[:, None], 1)[:, 0], 0.0)
    inner = jnp.take_along_axis(p, blk[:, None, None], axis=1)[:, 0]  # [B, block]
    j = jnp.sum(jnp.cumsum(inner, axis=-1) + before[:, None] <= u, axis=-1)
    last_nonzero = block - 1 - jnp.argmax(inner[:, ::-1] > 0, axis=-1)  # guards float round-off at the edge
    tokens = blk * block + jnp.minimum(j, last_nonzero)
    return tokens.astype(jnp.int32), total


def stop_sequence_hit(recent_BW: jax.Array, stops_SW: jax.Array, stop_lens_S: jax.Array) -> jax.Array:
    """True per row when the last tokens of `recent` (right-aligned window) equal a stop sequence.

    `stops_SW` holds each stop sequence right-aligned in a window of width W (left-filled with -1),
    `stop_lens_S` their lengths; a sequence matches when its last `len` positions agree.
    """
    if stops_SW.shape[0] == 0:
        return jnp.zeros(recent_BW.shape[:1], bool)
    w = recent_BW.shape[1]
    in_seq = jnp.arange(w)[None, :] >= (w - stop_lens_S)[:, None]  # [S, W]
    equal = recent_BW[:, None, :] == stops_SW[None, :, :]  # [B, S, W]
    return jnp.any(jnp.all(equal | ~in_seq[None], axis=-1), axis=-1)
