"""The jitted GRPO update, built by a factory, and the log-prob pass that fills `old_logp`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxalign.config import non_negative, require
from jaxalign.rl.batch import GRPOBatch
from jaxalign.rl.grpo import aggregate, kl_penalty, policy_loss
from jaxalign.train.logprobs import target_logprobs
from jaxalign.train.state import TrainState, apply_gradients


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

    def __post_init__(self):
        non_negative(self, "eps_low", "eps_high", "kl_coef")
        require(self, "dual_clip", self.dual_clip is None or self.dual_clip > 1, "must be > 1 (or null: off)")
        require(self, "norm_len", self.norm_len is None or self.norm_len > 0, "must be > 0 (or null)")


def make_grpo_step(graphdef, optimizer: optax.GradientTransformation, loss: GRPOLossConfig = GRPOLossConfig(),
                   schedule: optax.Schedule | None = None
                   ) -> Callable[[TrainState, GRPOBatch], tuple[TrainState, dict]]:
    """Builds `(state, batch) -> (state, metrics)` for one mini-batch `GRPOBatch` [B, T].

    `batch.ref_logp` is needed when kl_coef > 0. With a leading micro-batch axis on every field
    ([M, b, T], `GRPOBatch.micro_batches`) gradients are accumulated over the M micro-batches under
    `lax.scan`: the same update and metrics as the [M * b, T] mini-batch, with 1/M of its
    activation memory. metrics: loss, the policy-loss aux terms, grad_norm, and lr with a `schedule`.
    """

    def loss_fn(params, batch):
        model = nnx.merge(graphdef, params)
        logp, entropy = target_logprobs(model, batch.input_ids, batch.attention_mask, batch.positions,
                                        with_entropy=True)  # entropy is always reported
        mask = batch.target_mask
        pg, aux = policy_loss(logp, batch.old_logp, batch.advantages, mask, eps_low=loss.eps_low,
                              eps_high=loss.eps_high, dual_clip=loss.dual_clip, agg=loss.agg,
                              norm_len=loss.norm_len)
        total = pg
        ent = aggregate(entropy, mask, "token-mean")
        if loss.entropy_coef:
            total = total - loss.entropy_coef * ent
        if loss.kl_coef:
            kl = aggregate(kl_penalty(logp, batch.ref_logp, loss.kl_kind), mask, "token-mean")
            total = total + loss.kl_coef * kl
            aux["kl_ref"] = kl
        aux["pg_loss"] = pg
        aux["entropy"] = jax.lax.stop_gradient(ent)
        return total, aux

    def micro_loss(params, micro, w_pg, w_tok):
        # Each term re-weighted so that summing over micro-batches gives the whole mini-batch's
        # aggregate exactly (token-mean terms by policy tokens, the policy term by its own `agg`).
        total, aux = loss_fn(params, micro)
        return w_pg * aux["pg_loss"] + w_tok * (total - aux["pg_loss"]), aux

    def accumulated(params, batch):
        m = batch.target_mask.astype(jnp.float32)  # [M, b, T]
        tokens = m.sum((1, 2))
        seqs = (m.sum(2) > 0).sum(1).astype(jnp.float32)
        w_tok = tokens / jnp.maximum(tokens.sum(), 1.0)
        w_pg = {"token-mean": w_tok, "seq-mean-token-mean": seqs / jnp.maximum(seqs.sum(), 1.0),
                "seq-sum-norm": jnp.full_like(tokens, 1.0 / m.shape[0])}[loss.agg]
        grad_fn = jax.value_and_grad(micro_loss, has_aux=True)
        first = jax.tree.map(lambda x: x[0], batch)
        aux0 = jax.eval_shape(lambda: loss_fn(params, first)[1])
        init = (jax.tree.map(jnp.zeros_like, params), jnp.zeros((), jnp.float32),
                jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), aux0))

        def body(carry, xs):
            micro, wp, wt = xs
            (value, aux), g = grad_fn(params, micro, wp, wt)
            acc, total, acc_aux = carry
            acc_aux = {k: acc_aux[k] + (wp if k == "pg_loss" else wt) * v for k, v in aux.items()}
            return (jax.tree.map(jnp.add, acc, g), total + value, acc_aux), None

        (grads, total, aux), _ = jax.lax.scan(body, init, (batch, w_pg, w_tok))
        return (total, aux), grads

    def step(state: TrainState, batch: GRPOBatch) -> tuple[TrainState, dict]:
        if batch.input_ids.ndim == 3:  # [M, b, T]: M micro-batches, gradients accumulated
            (total, aux), grads = accumulated(state.params, batch)
        else:
            (total, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch)
        state, update_metrics = apply_gradients(state, grads, optimizer, schedule)
        return state, {"loss": total, **update_metrics, **aux}

    return step
