"""Optimizer configuration: AdamW with warmup and cosine or constant schedule, gradient clipping."""

from __future__ import annotations

import dataclasses
from typing import Literal

import optax

from jaxalign.config import non_negative, positive, require


@dataclasses.dataclass(frozen=True, kw_only=True)
class OptimConfig:
    """AdamW and its learning-rate schedule."""

    learning_rate: float = 3e-5
    """Peak learning rate (ASTER cold start: 3e-5; GRPO: 1e-6)."""
    schedule: Literal["cosine", "constant"] = "cosine"
    """Decay after warmup: cosine to min_lr_ratio * peak, or constant."""
    warmup_fraction: float = 0.06
    """Fraction of the total steps spent warming up linearly from 0."""
    min_lr_ratio: float = 0.0
    """Cosine floor as a fraction of the peak."""
    weight_decay: float = 0.01
    """Decoupled weight decay (AdamW), not applied to norms and biases."""
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0
    """Global-norm clipping threshold; 0 disables."""

    def __post_init__(self):
        positive(self, "learning_rate", "eps")
        non_negative(self, "weight_decay", "grad_clip")
        require(self, "warmup_fraction", 0 <= self.warmup_fraction < 1, "must be in [0, 1)")
        require(self, "min_lr_ratio", 0 <= self.min_lr_ratio <= 1, "must be in [0, 1]")
        require(self, "b1", 0 <= self.b1 < 1, "must be in [0, 1)")
        require(self, "b2", 0 <= self.b2 < 1, "must be in [0, 1)")


def learning_rate_schedule(config: OptimConfig, total_steps: int) -> optax.Schedule:
    """Linear warmup, then cosine decay (or constant) over `total_steps` optimizer steps."""
    warmup = int(round(config.warmup_fraction * total_steps))
    peak = config.learning_rate
    if config.schedule == "constant":
        after = optax.constant_schedule(peak)
    else:
        after = optax.cosine_decay_schedule(peak, max(total_steps - warmup, 1), alpha=config.min_lr_ratio)
    if warmup == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after], [warmup])


def decay_mask(params):
    """True for weight matrices, False for vectors (norm scales, biases), from logical axes.

    `params` is an nnx.State whose Variables carry `axes` metadata; the stacked-layer axis does
    not count, so a stacked norm scale ("layers", "embed") is a vector.
    """
    import jax
    from flax import nnx

    def one(var):
        axes = var.get_metadata().get("axes") or (None,) * var.get_value().ndim
        return var.replace(sum(a != "layers" for a in axes) >= 2)

    return jax.tree.map(one, params, is_leaf=lambda x: isinstance(x, nnx.Variable))


def make_optimizer(config: OptimConfig, total_steps: int, mask=None) -> optax.GradientTransformation:
    """The full update rule: clip, then AdamW under the schedule; `mask` (see `decay_mask`) picks
    which parameters decay (default: all)."""
    parts = []
    if config.grad_clip > 0:
        parts.append(optax.clip_by_global_norm(config.grad_clip))
    parts.append(optax.adamw(learning_rate_schedule(config, total_steps), b1=config.b1, b2=config.b2,
                             eps=config.eps, weight_decay=config.weight_decay, mask=mask))
    return optax.chain(*parts)
