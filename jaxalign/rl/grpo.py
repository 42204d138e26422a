"""GRPO as pure functions: the clipped policy loss, KL estimators, aggregation (advantages: rl/advantages.py).

Shapes: N trajectories laid out as consecutive groups of G (same prompt); B rows, T tokens.
All token-level arrays are aligned with *targets*: `logp[b, t]` is the log-prob of the token the
policy produced at position t (after its prefix); `mask[b, t]` is 1 on policy tokens only (tool
output, prompt and padding are 0, excluded from both the sum and the count).
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

Agg = Literal["token-mean", "seq-mean-token-mean", "seq-sum-norm"]


def kl_penalty(logp_BT: jax.Array, ref_logp_BT: jax.Array, kind: Literal["k1", "k2", "k3"]) -> jax.Array:
    """Per-token estimators of KL(pi || pi_ref) from samples of pi (Schulman, "Approximating KL").

    k1 = log pi - log pi_ref (unbiased, high variance, can be negative);
    k2 = (log pi - log pi_ref)^2 / 2; k3 = exp(log pi_ref - log pi) - (log pi_ref - log pi) - 1
    (unbiased and always >= 0).
    """
    d = logp_BT - ref_logp_BT
    if kind == "k1":
        return d
    if kind == "k2":
        return 0.5 * d * d
    if kind == "k3":
        return jnp.exp(-d) + d - 1.0
    raise ValueError(f"unknown KL estimator {kind!r}; use k1, k2 or k3")


def aggregate(values_BT: jax.Array, mask_BT: jax.Array, agg: Agg, norm_len: int | None = None) -> jax.Array:
    """Reduces per-token values to a scalar over masked tokens.

    token-mean: sum / number of policy tokens in the batch; seq-mean-token-mean: the mean over
    sequences (with at least one policy token) of each sequence's token mean; seq-sum-norm
    (Dr. GRPO): sum / (B * norm_len), a constant independent of response lengths.
    """
    m = mask_BT.astype(jnp.float32)
    total = jnp.sum(values_BT * m)
    if agg == "token-mean":
        return total / jnp.maximum(jnp.sum(m), 1.0)
    if agg == "seq-mean-token-mean":
        per_seq = jnp.sum(values_BT * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0)
        has = (jnp.sum(m, axis=1) > 0).astype(jnp.float32)
        return jnp.sum(per_seq * has) / jnp.maximum(jnp.sum(has), 1.0)
    if agg == "seq-sum-norm":
        return total / (values_BT.shape[0] * (norm_len or values_BT.shape[1]))
    raise ValueError(f"unknown aggregation {agg!r}")


def policy_loss(logp_BT: jax.Array, old_logp_BT: jax.Array, advantages: jax.Array, mask_BT: jax.Array, *,
                eps_low: float = 0.2, eps_high: float = 0.28, dual_clip: float | None = 10.0,
                agg: Agg = "token-mean", norm_len: int | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The clipped surrogate with clip-higher and dual-clip; returns (loss, aux metrics).

    r = pi / pi_old; per token: -min(r A, clip(r, 1 - eps_low, 1 + eps_high) A), and for A < 0 the
    loss is capped at -dual_clip * A. `advantages` is [B] (one per trajectory) or [B, T].
    aux (means over policy tokens): clip_frac (the clipped term was the active one),
    dual_clip_frac (the dual-clip cap was active), approx_kl (the k3 estimate of KL(pi_old || pi)
    from tokens sampled by pi_old, always >= 0), ratio_mean.
    """
    adv = advantages[:, None] if advantages.ndim == 1 else advantages
    adv = jnp.broadcast_to(adv, logp_BT.shape).astype(jnp.float32)
    log_ratio = logp_BT - old_logp_BT
    ratio = jnp.exp(log_ratio)
    unclipped = ratio * adv
    clipped = jnp.clip(ratio, 1.0 - eps_low, 1.0 + eps_high) * adv
    per_token = -jnp.minimum(unclipped, clipped)
    clip_active = clipped < unclipped
    dual_active = jnp.zeros_like(clip_active)
    if dual_clip is not None:
        cap = -dual_clip * adv
        dual_active = (adv < 0) & (per_token > cap)
        per_token = jnp.where(adv < 0, jnp.minimum(per_token, cap), per_token)
    loss = aggregate(per_token, mask_BT, agg, norm_len)
    m = mask_BT.astype(jnp.float32)
    n = jnp.maximum(jnp.sum(m), 1.0)
    aux = {
        "clip_frac": jnp.sum(clip_active * m) / n,
        "dual_clip_frac": jnp.sum(dual_active * m) / n,
        "approx_kl": jnp.sum((jnp.exp(log_ratio) - 1.0 - log_ratio) * m) / n,
        "ratio_mean": jnp.sum(ratio * m) / n,
    }
    return loss, aux
