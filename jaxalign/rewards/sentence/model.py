"""Reward models as NNX modules: the sentence-level model and the response-level baseline.

Both wrap our `Transformer` backbone (its final-normed hidden states) and add heads with bias.
Head parameters carry logical axes like the backbone's: the input dimension is "embed"; the
small head width m is left unsharded (None).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from jaxalign.models import Transformer, default_positions
from jaxalign.models.layers import param
from jaxalign.rewards.sentence.aggregate import aggregate, last_valid_index, sentence_rewards, sum_of_values


class SentenceRewardModel(nnx.Module):
    """Backbone + value head v: R^d -> R, query head W_q: R^d -> R^m, key head W_k: R^d -> R^m."""

    def __init__(self, backbone: Transformer, *, head_dim: int = 256, rngs: nnx.Rngs):
        d = backbone.config.hidden_size
        self.backbone = backbone
        self.head_dim = head_dim
        f32 = jnp.float32
        std = 1.0 / math.sqrt(d)
        self.value_w = param(rngs, (d,), ("embed",), f32, std=std)
        self.value_b = param(rngs, (), (), f32, init="zeros")
        self.query_w = param(rngs, (d, head_dim), ("embed", None), f32, std=std)
        self.query_b = param(rngs, (head_dim,), (None,), f32, init="zeros")
        self.key_w = param(rngs, (d, head_dim), ("embed", None), f32, std=std)
        self.key_b = param(rngs, (head_dim,), (None,), f32, init="zeros")

    def end_hidden(self, input_ids_BT: jax.Array, attention_mask_BT: jax.Array,
                   end_positions_BN: jax.Array) -> jax.Array:
        """The backbone's final hidden states at the END positions [B, N, D], float32: all the heads read."""
        h = self.backbone.hidden_states(input_ids_BT, default_positions(attention_mask_BT), attention_mask_BT)
        return jnp.take_along_axis(h, end_positions_BN[..., None], axis=1).astype(jnp.float32)

    def heads_from_hidden(self, h_BND: jax.Array, end_valid_BN: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(values [B, N], queries [B, M] at the last valid END, keys [B, N, M]) of END hidden states."""
        h_BND = h_BND.astype(jnp.float32)
        values = h_BND @ self.value_w.get_value() + self.value_b.get_value()
        keys = h_BND @ self.key_w.get_value() + self.key_b.get_value()
        last = last_valid_index(end_valid_BN)
        h_last = jnp.take_along_axis(h_BND, last[:, None, None], axis=1)[:, 0]
        queries = h_last @ self.query_w.get_value() + self.query_b.get_value()
        return values, queries, keys

    def heads(self, input_ids_BT: jax.Array, attention_mask_BT: jax.Array, end_positions_BN: jax.Array,
              end_valid_BN: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(values [B, N], queries [B, M] at the last valid END, keys [B, N, M]), float32."""
        return self.heads_from_hidden(self.end_hidden(input_ids_BT, attention_mask_BT, end_positions_BN), end_valid_BN)

    def score_hidden(self, h_BND: jax.Array, end_valid_BN: jax.Array, *, use_attention: bool = True,
                     use_rope: bool = True, rope_theta: float = 10000.0) -> tuple[jax.Array, jax.Array]:
        """(R [B], sentence rewards [B, N]) from END hidden states (`end_hidden`; e.g. cached features)."""
        values, queries, keys = self.heads_from_hidden(h_BND, end_valid_BN)
        if not use_attention:
            return sum_of_values(values, end_valid_BN), sentence_rewards(values, end_valid_BN)
        return aggregate(values, queries, keys, end_valid_BN, use_rope=use_rope, rope_theta=rope_theta)

    def __call__(self, input_ids_BT: jax.Array, attention_mask_BT: jax.Array, end_positions_BN: jax.Array,
                 end_valid_BN: jax.Array, *, use_attention: bool = True, use_rope: bool = True,
                 rope_theta: float = 10000.0) -> tuple[jax.Array, jax.Array]:
        """(R [B], sentence rewards [B, N]); without attention R = sum_k v_k (the ablation)."""
        return self.score_hidden(self.end_hidden(input_ids_BT, attention_mask_BT, end_positions_BN), end_valid_BN,
                                 use_attention=use_attention, use_rope=use_rope, rope_theta=rope_theta)


class ResponseRewardModel(nnx.Module):
    """The standard response-level reward model: a scalar head with bias on the last real token."""

    def __init__(self, backbone: Transformer, *, rngs: nnx.Rngs):
        d = backbone.config.hidden_size
        self.backbone = backbone
        self.value_w = param(rngs, (d,), ("embed",), jnp.float32, std=1.0 / math.sqrt(d))
        self.value_b = param(rngs, (), (), jnp.float32, init="zeros")

    def last_hidden(self, input_ids_BT: jax.Array, attention_mask_BT: jax.Array) -> jax.Array:
        """The backbone's final hidden state at the last real token of each row (right or left padding)
        [B, D], float32: all the head reads."""
        mask = attention_mask_BT.astype(jnp.int32)
        t = mask.shape[1]
        last = jnp.max(jnp.where(mask > 0, jnp.arange(t), 0), axis=-1)
        h = self.backbone.hidden_states(input_ids_BT, default_positions(mask), mask)
        return jnp.take_along_axis(h, last[:, None, None], axis=1)[:, 0].astype(jnp.float32)

    def score_hidden(self, h_BD: jax.Array) -> jax.Array:
        """R [B] from last-token hidden states (`last_hidden`; e.g. cached features)."""
        return h_BD.astype(jnp.float32) @ self.value_w.get_value() + self.value_b.get_value()

    def __call__(self, input_ids_BT: jax.Array, attention_mask_BT: jax.Array) -> jax.Array:
        """R [B]: the head at the last real token of each row (right or left padding)."""
        return self.score_hidden(self.last_hidden(input_ids_BT, attention_mask_BT))


def is_head_param(path: tuple, _value=None) -> bool:
    """True for a reward head's parameter (anything outside the backbone): the trainable set when
    the backbone is frozen."""
    return not path or path[0] != "backbone"
