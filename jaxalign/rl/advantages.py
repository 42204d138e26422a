"""GRPO advantages (all of them): group-normalised outcome advantages and per-token advantages.

Outcome rewards: one per trajectory, normalised within each group of G responses to one prompt
(`group_advantages`). Per-token rewards (process supervision, DeepSeekMath §4.1.3; a reward
function of `jaxalign.rewards.protocol`): the rewards that carry signal are normalised by the mean
and standard deviation of all such rewards in the group, and a token's advantage is the sum of the
normalised rewards from it to the end of its response (reward-to-go):

    r~_j = (r_j - mean(group)) / (std(group) + eps),     A_t = sum_{j >= t, j carries a reward} r~_j

"sparse" mode places only the response total on its last token: then A_t is the ordinary outcome
GRPO advantage (`group_advantages`) on every token. "dense" mode puts r_t on every token.
`jaxalign.rl.batch.grpo_batch` places either kind on the response tokens of a `GRPOBatch`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

Mode = Literal["dense", "sparse"]
Std = Literal["unbiased", "population", "none"]


def group_advantages(rewards_N: jax.Array, group_size: int, *, eps: float = 1e-6,
                     std: Std = "unbiased") -> jax.Array:
    """A_i = (R_i - mean(group)) / (std(group) + eps); `std="none"` is Dr. GRPO (no division).

    A group whose rewards are all equal gets zero advantage (no signal either way).
    """
    r = jnp.asarray(rewards_N, jnp.float32)
    if r.shape[0] % group_size:
        raise ValueError(f"{r.shape[0]} rewards do not form groups of {group_size}")
    if std == "unbiased" and group_size < 2:
        raise ValueError("the unbiased std needs group_size >= 2")
    g = r.reshape(-1, group_size)
    centred = g - g.mean(axis=1, keepdims=True)
    if std == "none":
        return centred.reshape(-1)
    ddof = 1 if std == "unbiased" else 0
    sd = g.std(axis=1, ddof=ddof, keepdims=True)
    # An all-equal group has centred == 0: return exactly 0 even with eps = 0 (no 0/0).
    return jnp.where(sd > 0, centred / (sd + eps), 0.0).reshape(-1)


def token_advantages(token_rewards: Sequence[np.ndarray], group_size: int, *, mode: Mode = "dense",
                     std: Std = "unbiased",
                     eps: float = 1e-6) -> list[np.ndarray]:
    """Per-token advantages (one float32 array per response, same lengths as `token_rewards`).

    Responses come in consecutive groups of `group_size`. A group whose rewards are all equal gets
    zero advantages. `std` follows `group_advantages` ("none": centred only, Dr. GRPO).
    """
    if mode not in ("dense", "sparse"):
        raise ValueError(f"mode must be 'dense' or 'sparse', got {mode!r}")
    if len(token_rewards) % group_size:
        raise ValueError(f"{len(token_rewards)} responses do not form groups of {group_size}")
    out: list[np.ndarray] = []
    for g in range(0, len(token_rewards), group_size):
        group = [np.asarray(r, np.float64) for r in token_rewards[g:g + group_size]]
        if any(r.size == 0 for r in group):
            raise ValueError(f"group {g // group_size}: an empty response has no token to carry a reward")
        # The rewards that carry signal: every token (dense) or the total on the last token (sparse).
        carried = [r if mode == "dense" else np.array([r.sum()]) for r in group]
        flat = np.concatenate(carried)
        centred = [c - flat.mean() for c in carried]
        if std != "none":
            sd = flat.std(ddof=1 if std == "unbiased" else 0) if flat.size > 1 else 0.0
            centred = [c / (sd + eps) if sd > 0 else np.zeros_like(c) for c in centred]
        for r, c in zip(group, centred):
            if mode == "dense":
                out.append(np.cumsum(c[::-1])[::-1].astype(np.float32))  # reward-to-go
            else:
                out.append(np.full(r.shape, c[0], np.float32))
    return out
