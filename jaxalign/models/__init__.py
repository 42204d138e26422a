"""The policy model: a Llama / Qwen2 / Qwen3 decoder in Flax NNX, its KV cache, and checkpoint IO.

    model = jaxalign.models.load("path/to/hf_dir_or_file.gguf")
    logits = jaxalign.models.forward(model, input_ids, attention_mask=mask)   # [B, T, V] float32
    jaxalign.models.save_hf(model, "out_dir")
"""

from __future__ import annotations

import os

from jaxalign.models.attention_ops import attention
from jaxalign.models.config import CheckpointError, ModelConfig, RopeScaling
from jaxalign.models.decode import (
    DecodeWeights,
    KVCache,
    decode_forward,
    forward_cached,
    init_cache,
    jit_forward_cached,
    prepare_decode_weights,
)
from jaxalign.models.gguf_io import load_gguf
from jaxalign.models.hf import load_hf, save_hf
from jaxalign.models.registry import resolve
from jaxalign.models.transformer import (
    Transformer,
    abstract_model,
    default_positions,
    forward,
    init_model,
    jit_forward,
    replace_config,
)

__all__ = [
    "CheckpointError", "attention", "DecodeWeights", "KVCache", "ModelConfig", "RopeScaling", "Transformer",
    "abstract_model", "decode_forward", "default_positions", "forward", "forward_cached", "init_cache",
    "init_model", "jit_forward", "jit_forward_cached", "load", "load_config", "load_gguf", "load_hf",
    "prepare_decode_weights", "replace_config", "resolve", "save_hf",
]


def load(path: str | os.PathLike, dtype: str = "float32", compute_dtype: str | None = None) -> Transformer:
    """Loads a model from a Hugging Face directory (config.json + safetensors) or a `.gguf` file.

    `dtype` is the parameter dtype; `compute_dtype` (default: `dtype`) the activation dtype.
    A packaged model may be named instead of a path (e.g. "smollm2-135m-instruct").
    """
    path = resolve(os.fspath(path))
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such file or directory")
    if os.path.isdir(path):
        return load_hf(path, dtype, compute_dtype)
    if path.endswith(".gguf"):
        return load_gguf(path, dtype, compute_dtype)
    raise CheckpointError(f"{path}: expected a Hugging Face directory or a .gguf file")


def load_config(path: str | os.PathLike) -> ModelConfig:
    """The ModelConfig of a checkpoint, read from metadata only (no weights are loaded)."""
    from jaxalign.models.gguf_io import _reader, config_from_gguf

    path = resolve(os.fspath(path))
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such file or directory")
    if os.path.isdir(path):
        return ModelConfig.from_hf(path)
    if path.endswith(".gguf"):
        return config_from_gguf(_reader(path), path)
    raise CheckpointError(f"{path}: expected a Hugging Face directory or a .gguf file")
