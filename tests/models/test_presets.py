"""Real-size presets checked under jax.eval_shape (no memory is allocated)."""

import jax
import numpy as np
import pytest
from flax import nnx

from jaxalign import models
from jaxalign.models import ModelConfig


@pytest.mark.parametrize("preset", [ModelConfig.smollm2_135m, ModelConfig.qwen3_4b])
def test_abstract_shapes_and_parameter_count(preset):
    config = preset()
    model = models.abstract_model(config)
    leaves = jax.tree.leaves(nnx.state(model))
    assert sum(int(np.prod(x.shape)) for x in leaves) == config.num_params()
    assert model.layers.attn.q_proj.get_value().shape == (config.num_layers, config.hidden_size,
                                                          config.num_heads, config.head_dim)
    ids = jax.ShapeDtypeStruct((2, 16), np.int32)
    logits = jax.eval_shape(lambda m, i: models.forward(m, i), model, ids)
    assert logits.shape == (2, 16, config.vocab_size) and logits.dtype == np.float32
