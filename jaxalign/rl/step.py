"""The jitted GRPO update, built by a factory, and the log-prob pass that fills `old_logp`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxalign.rl.grpo import aggregate, kl_penalty, policy_loss
from jaxalign.sft.step import TrainState
from jaxalign.train.logprobs import target_logprobs


@dataclasses.dataclass(frozen=True, kw_only=True)
class GRPOLossConfig:
    """The policy objective (defaults: the ASTER reproduction)."""

    eps_low: float = 0.2
    eps_high: float = 0.28
    """Clip-higher: a wider upper clip lets low-probability tokens grow (keeps entropy up)."""
    dual_clip: float | None = 10.0
    """Cap on the loss of a token with negative advantage: -dual_clip * A (None disables)."""
    agg: Literal["token-mean", "seq-mean-token-mean", "seq-sum-norm"] = "token-mean"
    norm_len: int | None = None
    """seq-sum-norm's constant length (default: the padded row length)."""
    kl_coef: float = 0.0
    """KL penalty to the reference policy, in the loss (0: none, as ASTER)."""
    kl_kind: Literal["k1", "k2", "k3"] = "k3"
    entropy_coef: float = 0.0
    """Entropy bonus (0: none, as ASTER)."""


def shift_mask(loss_mask_BT: jax.Array) -> jax.Array:
    """Token mask [B, T] (1 on policy tokens) -> target mask: position t predicts token t + 1."""
    return jnp.concatenate([loss_mask_BT[:, 1:], jnp.zeros_like(loss_mask_BT[:, :1])], axis=1)


def make_logprob_fn(graphdef) -> Callable:
    """`(params, batch) -> (logp [B, T], entropy [B, T])` at target positions (no gradients)."""

    def fn(params, batch):
        model = nnx.merge(graphdef, params)
        return target_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["positions"],
                               with_entropy=True)

    return fn


def make_grpo_step(graphdef, optimizer: optax.GradientTransformation,
                   loss: GRPOLossConfig = GRPOLossConfig()) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """Builds `(state, batch) -> (state, metrics)` for one mini-batch [B, T].

    batch: input_ids, attention_mask, positions, target_mask (policy tokens, target-aligned),
    old_logp, advantages [B]; ref_logp when kl_coef > 0.
    """

    def loss_fn(params, batch):
        model = nnx.merge(graphdef, params)
        logp, entropy = target_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["positions"],
                                        with_entropy=True)  # entropy is always reported
        mask = batch["target_mask"]
        pg, aux = policy_loss(logp, batch["old_logp"], batch["advantages"], mask, eps_low=loss.eps_low,
                              eps_high=loss.eps_high, dual_clip=loss.dual_clip, agg=loss.agg,
                              norm_len=loss.norm_len)
        total = pg
        ent = aggregate(entropy, mask, "token-mean")
        if loss.entropy_coef:
            total = total - loss.entropy_coef * ent
        if loss.kl_coef:
            kl = aggregate(kl_penalty(logp, batch["ref_logp"], loss.kl_kind), mask, "token-mean")
            total = total + loss.kl_coef * kl
            aux["kl_ref"] = kl
        aux["pg_loss"] = pg
        aux["entropy"] = jax.lax.stop_gradient(ent)
        return total, aux

    def step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        (total, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": total, "grad_norm": optax.tree.norm(grads), **aux}
        return TrainState(params=params, opt_state=opt_state, step=state.step + 1), metrics

    return step
