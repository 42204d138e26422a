"""Token-level rewards as GRPO advantages (host side): the endogenous reward's hook into RL.

GRPO normalises rewards within a group of G responses to one prompt. With per-token rewards
(process supervision, DeepSeekMath §4.1.3), the rewards that carry signal are normalised by the
mean and standard deviation of all such rewards in the group, and a token's advantage is the sum
of the normalised rewards from it to the end of its response (reward-to-go):

    r~_j = (r_j - mean(group)) / (std(group) + eps),     A_t = sum_{j >= t, j carries a reward} r~_j

"sparse" mode places only the response total on its last token: then A_t is the ordinary outcome
GRPO advantage (`jaxalign.rl.grpo.group_advantages`) on every token. "dense" mode puts r_t on
every token. `jaxalign.rl.batch.trajectory_rows` takes the resulting per-token arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

Mode = Literal["dense", "sparse"]


def token_advantages(token_rewards: Sequence[np.ndarray], group_size: int, *, mode: Mode = "dense",
                     std: Literal["unbiased", "population", "none"] = "unbiased",
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


def with_token_advantages(rows: dict[str, np.ndarray], prompt_lengths: Sequence[int],
                          advantages: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """GRPO rows (`jaxalign.rl.batch.trajectory_rows`) with per-token advantages [rows, T].

    `advantages[i]` holds one value per response token of row i, whose prompt has
    `prompt_lengths[i]` tokens; they are placed target-aligned like `target_mask` (position t
    carries token t + 1). `jaxalign.rl.grpo.policy_loss` takes [B] or [B, T] advantages alike.
    """
    out = dict(rows)
    adv = np.zeros(rows["input_ids"].shape, np.float32)
    for i, (p, a) in enumerate(zip(prompt_lengths, advantages)):
        a = np.asarray(a, np.float32)
        if p < 1 or p - 1 + a.size > adv.shape[1]:
            raise ValueError(f"row {i}: {a.size} advantages after a {p}-token prompt do not fit {adv.shape[1]} tokens")
        adv[i, p - 1:p - 1 + a.size] = a
    out["advantages"] = adv
    return out
