"""GGUF files (llama.cpp): config from metadata, tensors dequantized to float32.

A quantised file (Q4_1, Q8_0, ...) loads as float32 weights that still carry its quantisation error:
dequantizing restores the dtype, not the original values. `load_gguf` logs which tensors were
quantised, so a user comparing against the original checkpoint knows why they differ.

GGUF stores Llama q/k projections with rows permuted for llama.cpp's interleaved rotary; we undo
that permutation so the weights follow the Hugging Face "rotate_half" convention our model uses.
Qwen2/Qwen3 files are not permuted (llama.cpp runs them with NeoX-style rotary).
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter

import numpy as np

from jaxalign.models.config import ARCHITECTURES, CheckpointError, ModelConfig
from jaxalign.models.hf import build_model
from jaxalign.models.transformer import Transformer

log = logging.getLogger(__name__)

# Tensor types stored as plain floats; everything else is a quantisation (Q4_1, Q8_0, Q4_K, ...).
FLOAT_TYPES = ("F32", "F16", "BF16", "F64")

_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.bias": "self_attn.o_proj.bias",
    "attn_q_norm.weight": "self_attn.q_norm.weight",
    "attn_k_norm.weight": "self_attn.k_norm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}


def _reader(path: str):
    import gguf

    if not os.path.exists(path):
        raise CheckpointError(f"{path}: file not found")
    try:
        return gguf.GGUFReader(path)
    except Exception as e:  # the gguf package raises ValueError/struct.error/IndexError on junk
        raise CheckpointError(f"{path}: not a readable GGUF file ({type(e).__name__}: {e})") from e


def _field(reader, key: str, default=None):
    field = reader.fields.get(key)
    if field is None:
        return default
    return field.contents()


def config_from_gguf(reader, source: str, **overrides) -> ModelConfig:
    """Maps GGUF metadata (`{arch}.block_count`, ...) to a ModelConfig."""
    arch = _field(reader, "general.architecture")
    if arch not in ARCHITECTURES:
        raise CheckpointError(f"{source}: unsupported architecture general.architecture={arch!r}; "
                              f"supported: {', '.join(ARCHITECTURES)}")

    def need(key):
        value = _field(reader, f"{arch}.{key}")
        if value is None:
            raise CheckpointError(f"{source}: missing metadata field {arch}.{key!r}")
        return value

    names = {t.name for t in reader.tensors}
    if "rope_freqs.weight" in names:
        raise CheckpointError(f"{source}: per-frequency rope factors (rope_freqs.weight, Llama-3.1 "
                              "scaling) are not supported in GGUF; load the Hugging Face checkpoint")
    scaling_type = _field(reader, f"{arch}.rope.scaling.type", "none")
    if scaling_type not in ("none", "linear"):
        raise CheckpointError(f"{source}: unsupported rope scaling {scaling_type!r}")
    rope = {"type": "default"}
    if scaling_type == "linear":
        rope = {"type": "linear", "factor": _f32(need("rope.scaling.factor"))}
    heads = int(need("attention.head_count"))
    hidden = int(need("embedding_length"))
    tokens = _field(reader, "tokenizer.ggml.tokens")
    vocab = _field(reader, f"{arch}.vocab_size") or (len(tokens) if tokens else None)
    if vocab is None:
        raise CheckpointError(f"{source}: cannot tell the vocabulary size")
    bias = "blk.0.attn_output.bias" in names
    kw = dict(
        architecture=arch,
        vocab_size=int(vocab),
        hidden_size=hidden,
        intermediate_size=int(need("feed_forward_length")),
        num_layers=int(need("block_count")),
        num_heads=heads,
        num_kv_heads=int(_field(reader, f"{arch}.attention.head_count_kv", heads)),
        head_dim=int(_field(reader, f"{arch}.attention.key_length", hidden // heads)),
        rope_theta=_f32(_field(reader, f"{arch}.rope.freq_base", 10000.0)),
        rope_scaling=rope,
        rms_norm_eps=_f32(need("attention.layer_norm_rms_epsilon")),
        tie_embeddings="output.weight" not in names,
        qkv_bias="blk.0.attn_q.bias" in names,
        o_bias=bias,
        mlp_bias="blk.0.ffn_up.bias" in names,
        qk_norm="blk.0.attn_q_norm.weight" in names,
        max_position_embeddings=int(_field(reader, f"{arch}.context_length", 4096)),
    )
    from jaxalign.config import from_dict

    kw.update(overrides)
    try:
        return from_dict(ModelConfig, kw)
    except ValueError as e:
        raise CheckpointError(f"{source}: {e}") from e


def _f32(value) -> float:
    """GGUF stores float32; take the shortest decimal that round-trips (9.9999997e-06 -> 1e-05)."""
    return float(str(np.float32(value)))


def _unpermute(w: np.ndarray, heads: int) -> np.ndarray:
    """Inverse of llama.cpp's q/k row permutation (interleaved -> half-split rotary pairs)."""
    half = w.shape[0] // heads // 2
    return w.reshape(heads, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def hf_name(gguf_name: str) -> str | None:
    """The Hugging Face name of a GGUF tensor (None when it has no counterpart)."""
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    m = re.fullmatch(r"blk\.(\d+)\.(.+)", gguf_name)
    if m and m.group(2) in _LAYER_NAMES:
        return f"model.layers.{m.group(1)}.{_LAYER_NAMES[m.group(2)]}"
    return None


def quantisation_note(reader, source: str) -> str | None:
    """A one-line note of the quantised tensors of a GGUF file (None when every tensor is a plain float)."""
    types = Counter(t.tensor_type.name for t in reader.tensors)
    quantised = {name: n for name, n in types.items() if name not in FLOAT_TYPES}
    if not quantised:
        return None
    kinds = ", ".join(f"{n} {name}" for name, n in sorted(quantised.items(), key=lambda kv: -kv[1]))
    return (f"{source}: {sum(quantised.values())} of {len(reader.tensors)} tensors are quantised ({kinds}); "
            "dequantized to float32, the weights keep the quantisation error (they are not the original "
            "unquantised checkpoint)")


def load_gguf(path: str, dtype: str = "float32", compute_dtype: str | None = None) -> Transformer:
    """Loads a GGUF file (any quantisation the `gguf` package dequantizes) into a Transformer.

    Quantised tensors are dequantized to float32 (then cast to `dtype`): the result is only as exact
    as the file, e.g. the packaged SmolLM2 is Q4_1. A log line (INFO) names the quantisations found.
    """
    import gguf

    reader = _reader(path)
    config = config_from_gguf(reader, path, param_dtype=dtype, dtype=compute_dtype or dtype)
    note = quantisation_note(reader, path)
    if note is not None:
        log.info(note)
    tensors = {}
    for t in reader.tensors:
        name = hf_name(t.name)
        if name is not None:
            tensors[name] = t

    def get(name):
        t = tensors.get(name)
        if t is None:
            return None
        try:
            w = gguf.dequantize(t.data, t.tensor_type).astype(np.float32)
        except Exception as e:
            raise CheckpointError(f"{path}: cannot dequantize tensor {t.name!r} "
                                  f"({t.tensor_type.name}): {e}") from e
        w = w.reshape([int(x) for x in reversed(t.shape)])
        if config.architecture == "llama" and name.endswith("q_proj.weight"):
            w = _unpermute(w, config.num_heads)
        elif config.architecture == "llama" and name.endswith("k_proj.weight"):
            w = _unpermute(w, config.num_kv_heads)
        return w

    return build_model(config, get, path, available=set(tensors))
