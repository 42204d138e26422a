"""The SFT train step: next-token cross-entropy on policy tokens only, AdamW, accumulation.

Batches carry a leading accumulation axis: input_ids / loss_mask / positions / segment_ids of
shape [A, B, T]. `loss_mask[a, b, t] = 1` when token t is a *policy* token to be predicted
(assistant text); prompt, tool-output and padding tokens are 0 and contribute nothing. The loss is
the mean over every policy token of the whole step (all micro-batches), exactly as one big batch.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxalign.train.logprobs import target_logprobs
from jaxalign.train.state import TrainState, apply_gradients
from jaxalign.train.targets import to_targets


def sft_loss_terms(model, batch: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
    """(sum of -log p over policy tokens, number of policy tokens) for one micro-batch [B, T].

    `loss_mask` is token-aligned; `jaxalign.train.targets.to_targets` aligns it with the predictions
    (and drops predictions across a packed-sequence boundary).
    """
    ids = batch["input_ids"]
    attn = batch["attention_mask"]
    logp, _ = target_logprobs(model, ids, attn, batch["positions"], segment_ids_BT=batch.get("segment_ids"))
    target_mask = to_targets(batch["loss_mask"], batch.get("segment_ids")).astype(jnp.float32)
    return -jnp.sum(logp * target_mask), jnp.sum(target_mask)


def make_sft_step(graphdef, optimizer: optax.GradientTransformation, loss_terms: Callable = sft_loss_terms,
                  schedule: optax.Schedule | None = None) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """Builds the pure train step `(state, batch) -> (state, metrics)`; jit it with donation.

    `schedule` (the optimizer's learning-rate schedule) adds the step's rate as the metric `lr`.

    Gradients of the summed loss are accumulated over the leading micro-batch axis with
    `lax.scan` and divided by the total number of policy tokens at the end.
    """

    def grads_of(params, micro):
        def f(p):
            total, count = loss_terms(nnx.merge(graphdef, p), micro)
            return total, count

        (total, count), grads = jax.value_and_grad(f, has_aux=True)(params)
        return total, count, grads

    def step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        zeros = jax.tree.map(jnp.zeros_like, state.params)

        def body(carry, micro):
            total, count, acc = carry
            t, c, g = grads_of(state.params, micro)
            return (total + t, count + c, jax.tree.map(jnp.add, acc, g)), None

        init = (jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32), zeros)
        (total, count, grads), _ = jax.lax.scan(body, init, batch)
        denom = jnp.maximum(count, 1.0)
        grads = jax.tree.map(lambda g: g / denom, grads)
        new, update = apply_gradients(state, grads, optimizer, schedule)
        metrics = {"loss": total / denom, **update, "policy_tokens": count, "param_norm": optax.tree.norm(new.params)}
        return new, metrics

    return step
