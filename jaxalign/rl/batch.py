"""From scored trajectories to fixed-shape GRPO training rows."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxalign.rollout.types import Trajectory
from jaxalign.sampling.sampler import bucket


def trajectory_rows(trajs: Sequence[Trajectory], advantages: Sequence[float], *, rows: int,
                    pad_id: int = 0, min_len: int = 64) -> dict[str, np.ndarray]:
    """Right-padded rows [rows, T] (T bucketed): prompt + response ids, with target-aligned masks.

    `target_mask[b, t]` is 1 when token t + 1 is a policy token; `sampler_logp[b, t]` holds the
    sampler's log-prob of that token. Rows beyond len(trajs) are padding (all-zero masks), so the
    compiled step sees one shape per length bucket whatever dynamic sampling kept.
    """
    if len(trajs) > rows:
        raise ValueError(f"{len(trajs)} trajectories do not fit {rows} rows")
    t_len = bucket(max((len(t.prompt_tokens) + len(t.tokens) for t in trajs), default=1), minimum=min_len)
    out = {
        "input_ids": np.full((rows, t_len), pad_id, np.int32),
        "attention_mask": np.zeros((rows, t_len), np.int32),
        "positions": np.tile(np.arange(t_len, dtype=np.int32), (rows, 1)),
        "target_mask": np.zeros((rows, t_len), np.int32),
        "sampler_logp": np.zeros((rows, t_len), np.float32),
        "advantages": np.zeros((rows,), np.float32),
    }
    for i, (t, a) in enumerate(zip(trajs, advantages)):
        p, n = len(t.prompt_tokens), len(t.tokens)
        out["input_ids"][i, :p + n] = t.prompt_tokens + t.tokens
        out["attention_mask"][i, :p + n] = 1
        out["target_mask"][i, p - 1:p - 1 + n] = t.loss_mask
        out["sampler_logp"][i, p - 1:p - 1 + n] = t.logprobs
        out["advantages"][i] = a
    return out
