"""From scored trajectories to one typed, fixed-shape GRPO batch.

Alignment: every per-token field of a `GRPOBatch` is *target-aligned* (`jaxalign.train.targets`):
`x[b, t]` belongs to token t + 1 of row b, the token position t predicts. `grpo_batch` fills
token-aligned rows first (prompt + response ids; on the response tokens p .. p + n - 1 the loss
mask, the sampler's log-probs and the advantages) and moves each per-token array to target
alignment with exactly one `to_targets` call. Log-prob passes (`old_logp`, `ref_logp`) already
come out target-aligned (`jaxalign.train.logprobs.target_logprobs`).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from flax import struct

from jaxalign.rollout.types import Trajectory
from jaxalign.sampling.sampler import bucket
from jaxalign.train.targets import to_targets


@struct.dataclass
class GRPOBatch:
    """One GRPO (mini-)batch [B, T], or [M, b, T] with a leading micro-batch axis.

    Per-token fields are target-aligned (module docstring). Rows beyond the real trajectories are
    padding: all-zero masks and advantages.
    """

    input_ids: jax.Array
    """Prompt + response ids, right-padded (int32)."""
    attention_mask: jax.Array
    """1 on real tokens (int32)."""
    positions: jax.Array
    """Token positions 0 .. T - 1 (int32)."""
    target_mask: jax.Array
    """1 where the predicted token is a policy token (tool output, prompt, padding: 0)."""
    advantages: jax.Array
    """Per-token advantages (float32), always [B, T]: a sequence advantage is broadcast onto every
    response token (the loss multiplies it by `target_mask`, so only policy tokens count)."""
    old_logp: jax.Array
    """The policy's log-probs before this update (float32)."""
    ref_logp: jax.Array | None = None
    """The reference policy's log-probs (float32; only with a KL penalty)."""

    def inputs(self) -> dict[str, jax.Array]:
        """The model inputs, for a log-prob pass."""
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask, "positions": self.positions}

    def rows(self, sl: slice) -> GRPOBatch:
        """The rows `sl` of every field (a mini-batch)."""
        return jax.tree.map(lambda v: v[sl], self)

    def micro_batches(self, m: int) -> GRPOBatch:
        """[B, T] -> [m, B / m, T] on every field (gradients are accumulated inside the step)."""
        return jax.tree.map(lambda v: v.reshape(m, -1, *v.shape[1:]), self)


def grpo_batch(trajs: Sequence[Trajectory], advantages: Sequence[float | np.ndarray], *, rows: int,
               pad_id: int = 0, min_len: int = 64) -> tuple[GRPOBatch, np.ndarray]:
    """(GRPOBatch [rows, T] with `old_logp` still zero, the sampler's log-probs [rows, T]), T bucketed.

    `advantages[i]` is trajectory i's sequence advantage (a float, broadcast onto its response
    tokens) or one value per response token (an array of len(tokens)). The sampler's log-probs are
    target-aligned like the batch; the trainer compares them with `old_logp` and drops them. Rows
    beyond len(trajs) are padding, so the compiled step sees one shape per length bucket whatever
    dynamic sampling kept.
    """
    if len(trajs) > rows:
        raise ValueError(f"{len(trajs)} trajectories do not fit {rows} rows")
    if len(advantages) != len(trajs):
        raise ValueError(f"{len(advantages)} advantages for {len(trajs)} trajectories")
    t_len = bucket(max((len(t.prompt_tokens) + len(t.tokens) for t in trajs), default=1), minimum=min_len)
    ids = np.full((rows, t_len), pad_id, np.int32)
    attn = np.zeros((rows, t_len), np.int32)
    # token-aligned: [i, j] belongs to token j of row i
    loss_mask = np.zeros((rows, t_len), np.int32)
    sampler_logp = np.zeros((rows, t_len), np.float32)
    adv = np.zeros((rows, t_len), np.float32)
    for i, (t, a) in enumerate(zip(trajs, advantages)):
        p, n = len(t.prompt_tokens), len(t.tokens)
        if p < 1 or p + n > t_len:
            raise ValueError(f"row {i}: {n} response tokens after a {p}-token prompt do not fit {t_len} tokens")
        a = np.asarray(a, np.float32)
        if a.ndim and a.shape != (n,):
            raise ValueError(f"row {i}: {a.size} advantages do not fit its {n} response tokens")
        ids[i, :p + n] = t.prompt_tokens + t.tokens
        attn[i, :p + n] = 1
        loss_mask[i, p:p + n] = t.loss_mask
        sampler_logp[i, p:p + n] = t.logprobs
        adv[i, p:p + n] = a
    batch = GRPOBatch(input_ids=ids, attention_mask=attn,
                      positions=np.tile(np.arange(t_len, dtype=np.int32), (rows, 1)),
                      target_mask=to_targets(loss_mask), advantages=to_targets(adv),
                      old_logp=np.zeros((rows, t_len), np.float32))
    return batch, to_targets(sampler_logp)
