"""The one alignment convention of per-token training arrays: target-aligned.

A causal LM at position t predicts token t + 1. Every per-token array a loss reads (target mask,
log-probs, advantages, rewards turned into advantages) is therefore indexed by the *predicting*
position: `x[b, t]` belongs to token `t + 1` of row b. Data is produced token-aligned (`x[b, t]`
belongs to token t: a trajectory's loss mask, a rollout's log-probs, a reward per response
token), and `to_targets` is the only place where it moves to target alignment: one step left,
zero in the last column, and zero where token t + 1 starts a new packed segment (a prediction
across a packing boundary is never trained).

    loss_mask  (token-aligned)   0 0 1 1 1      tokens: p0 p1 a0 a1 a2
    to_targets(loss_mask)        0 1 1 1 0      position 1 predicts a0, ..., a2 predicts nothing
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np


def to_targets(x_BT: Any, segment_ids_BT: Any = None) -> Any:
    """Token-aligned [B, T] -> target-aligned [B, T] (NumPy in, NumPy out; jax in, jax out)."""
    xp = np if isinstance(x_BT, np.ndarray) else jnp
    out = xp.concatenate([x_BT[:, 1:], xp.zeros_like(x_BT[:, :1])], axis=1)
    if segment_ids_BT is not None:
        seg = segment_ids_BT
        same = xp.concatenate([seg[:, 1:] == seg[:, :-1], xp.zeros_like(seg[:, :1], dtype=bool)], axis=1)
        out = out * same.astype(out.dtype)
    return out
