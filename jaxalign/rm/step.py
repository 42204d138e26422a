"""Bradley-Terry training of reward models: pair losses and the jitted train step factory.

Batches hold pairs: `input_ids`, `attention_mask` [P, 2, T] (slot 0 chosen, slot 1 rejected),
`pair_weight` [P] (0 for padding pairs) and, for the sentence model, `end_positions`,
`end_valid` [P, 2, N]. P (pairs) is the batch axis that the mesh splits. Batches of cached backbone
features (`jaxalign.rm.features`) hold `end_hidden` [P, 2, N, D] (sentence model) or
`last_hidden` [P, 2, D] (response model) instead of the token arrays; the scores are the same functions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxalign.rewards.sentence.aggregate import bradley_terry_loss
from jaxalign.rewards.sentence.model import ResponseRewardModel, SentenceRewardModel
from jaxalign.train.state import TrainState, apply_gradients


def _flat(x_P2X: jax.Array) -> jax.Array:
    return x_P2X.reshape((-1,) + x_P2X.shape[2:])


def _pairs(x_R: jax.Array) -> tuple[jax.Array, jax.Array]:
    x = x_R.reshape(-1, 2)
    return x[:, 0], x[:, 1]


def sentence_pair_scores(model: SentenceRewardModel, batch: dict, *, use_attention: bool = True,
                         use_rope: bool = True, rope_theta: float = 10000.0) -> dict[str, jax.Array]:
    """Scores of the sentence model on a pair batch: `chosen`, `rejected` [P], the BT logit `scale` [P]
    and `sentence_rewards` [P, 2, N].

    The scale is 1, except without attention: 1 / max(N_chosen, N_rejected) (N = valid END slots),
    which keeps the logit of the summed values from growing with the number of sentences.
    """
    valid = _flat(batch["end_valid"])
    if "end_hidden" in batch:  # cached backbone features (jaxalign.rm.features)
        r, s = model.score_hidden(_flat(batch["end_hidden"]), valid, use_attention=use_attention, use_rope=use_rope,
                                  rope_theta=rope_theta)
    else:
        r, s = model(_flat(batch["input_ids"]), _flat(batch["attention_mask"]), _flat(batch["end_positions"]), valid,
                     use_attention=use_attention, use_rope=use_rope, rope_theta=rope_theta)
    chosen, rejected = _pairs(r)
    scale = jnp.ones_like(chosen)
    if not use_attention:
        n_c, n_r = _pairs(valid.sum(axis=-1).astype(jnp.float32))
        scale = 1.0 / jnp.maximum(jnp.maximum(n_c, n_r), 1.0)
    return {"chosen": chosen, "rejected": rejected, "scale": scale,
            "sentence_rewards": s.reshape(batch["end_valid"].shape)}


def response_pair_scores(model: ResponseRewardModel, batch: dict) -> dict[str, jax.Array]:
    """Scores of the response-level model on a pair batch: `chosen`, `rejected`, `scale` (= 1), all [P]."""
    if "last_hidden" in batch:  # cached backbone features (jaxalign.rm.features)
        r = model.score_hidden(_flat(batch["last_hidden"]))
    else:
        r = model(_flat(batch["input_ids"]), _flat(batch["attention_mask"]))
    chosen, rejected = _pairs(r)
    return {"chosen": chosen, "rejected": rejected, "scale": jnp.ones_like(chosen)}


def pair_loss(scores_fn: Callable[..., dict], model: Any, batch: dict, *,
              reward_penalty: float = 0.0) -> tuple[jax.Array, dict]:
    """The Bradley-Terry loss (+ reward_penalty * R^2) of `scores_fn(model, batch)` over real pairs."""
    out = scores_fn(model, batch)
    return bradley_terry_loss(out["chosen"], out["rejected"], scale_B=out["scale"], reward_penalty=reward_penalty,
                              weight_B=batch["pair_weight"])


def split_trainable(model: nnx.Module, freeze_backbone: bool) -> tuple[Any, Any, Any]:
    """(graphdef, trainable state, frozen state): with `freeze_backbone` only the heads train."""
    if freeze_backbone:
        return nnx.split(model, nnx.Not(nnx.PathContains("backbone")), ...)
    return nnx.split(model, nnx.Param, ...)


def make_rm_step(graphdef, optimizer: optax.GradientTransformation,
                 loss_fn: Callable[[Any, dict], tuple[jax.Array, dict]],
                 schedule: optax.Schedule | None = None) -> Callable:
    """Builds the pure step `(state, batch) -> (state, metrics)`; jit it with donation (`compile_step`).

    `loss_fn(model, batch) -> (loss, metrics)`, e.g. `functools.partial(pair_loss, sentence_pair_scores)`.
    Gradients flow to `state.params` only (a `TrainState` whose `frozen` holds the rest of the model);
    `schedule` adds the step's learning rate as the metric `lr`.
    """

    def step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        def f(p):
            return loss_fn(nnx.merge(graphdef, p, state.frozen), batch)

        (loss, metrics), grads = jax.value_and_grad(f, has_aux=True)(state.params)
        new, update = apply_gradients(state, grads, optimizer, schedule)
        return new, {"loss": loss, **metrics, **update}

    return step


def make_rm_scorer(graphdef, scores_fn: Callable[..., dict]) -> Callable:
    """A pure `(params, frozen, batch) -> scores` (the dict of `scores_fn`) for evaluation."""

    def score(params, frozen, batch):
        return scores_fn(nnx.merge(graphdef, params, frozen), batch)

    return score
