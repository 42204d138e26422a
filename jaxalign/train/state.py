"""The train state every trainer carries, and the one update body that advances it.

`TrainState` holds the trainable parameters, their optimizer state, the optimizer step, and an
optional frozen part (a reward model's frozen backbone: read by the loss, never differentiated,
no optimizer state). Steps build their gradients and call `apply_gradients`; nothing else
touches `opt_state`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct


@struct.dataclass
class TrainState:
    """Parameters, optimizer state, optimizer step count and frozen parameters (a pytree)."""

    params: Any
    opt_state: Any
    step: jax.Array
    frozen: Any = None
    """Parameters the loss reads but does not train (None: everything trains)."""


def init_train_state(params: Any, optimizer: optax.GradientTransformation, frozen: Any = None) -> TrainState:
    """A fresh TrainState at step 0 (no optimizer state is kept for `frozen`)."""
    return TrainState(params=params, opt_state=optimizer.init(params), step=jnp.zeros((), jnp.int32), frozen=frozen)


def apply_gradients(state: TrainState, grads: Any, optimizer: optax.GradientTransformation,
                    schedule: optax.Schedule | None = None) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer update: (the next state, {"grad_norm", "lr"}).

    `lr` is `schedule(step)` at the step being taken (the rate this update used), so the host logs
    it from the step's own metrics instead of recomputing the schedule.
    """
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"grad_norm": optax.tree.norm(grads)}
    if schedule is not None:
        metrics["lr"] = jnp.asarray(schedule(state.step), jnp.float32)
    return state.replace(params=params, opt_state=opt_state, step=state.step + 1), metrics
