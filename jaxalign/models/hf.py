"""Hugging Face checkpoints: safetensors (single or sharded) to our stacked layout and back.

The mapping is written once, in Hugging Face names; the GGUF loader produces Hugging Face names
too, so both formats go through `build_model`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxalign.models import safetensors_io
from jaxalign.models.config import CheckpointError, ModelConfig
from jaxalign.models.transformer import Transformer, abstract_model

log = logging.getLogger(__name__)

# Tensors some checkpoints carry that hold no parameters of ours.
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def _param_table(c: ModelConfig) -> list[tuple[tuple[str, ...], str, Callable, Callable]]:
    """(our path, HF name template, hf->ours, ours->hf) for every parameter.

    Templates containing "{i}" are per layer and stack into a leading [L] axis.
    """
    d, n, k, h = c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim
    ident = (lambda w: w, lambda w: w)
    transpose = (lambda w: w.T, lambda w: w.T)

    def heads_in(count):  # HF [count*h, d] <-> ours [d, count, h]
        return (lambda w: w.T.reshape(d, count, h), lambda w: w.reshape(d, count * h).T)

    def bias(count):  # HF [count*h] <-> ours [count, h]
        return (lambda w: w.reshape(count, h), lambda w: w.reshape(count * h))

    out_proj = (lambda w: w.T.reshape(n, h, d), lambda w: w.reshape(n * h, d).T)
    p = "model.layers.{i}."
    rows = [
        (("embed",), "model.embed_tokens.weight", *ident),
        (("final_norm", "scale"), "model.norm.weight", *ident),
        (("layers", "input_norm", "scale"), p + "input_layernorm.weight", *ident),
        (("layers", "post_attn_norm", "scale"), p + "post_attention_layernorm.weight", *ident),
        (("layers", "attn", "q_proj"), p + "self_attn.q_proj.weight", *heads_in(n)),
        (("layers", "attn", "k_proj"), p + "self_attn.k_proj.weight", *heads_in(k)),
        (("layers", "attn", "v_proj"), p + "self_attn.v_proj.weight", *heads_in(k)),
        (("layers", "attn", "o_proj"), p + "self_attn.o_proj.weight", *out_proj),
        (("layers", "mlp", "gate_proj"), p + "mlp.gate_proj.weight", *transpose),
        (("layers", "mlp", "up_proj"), p + "mlp.up_proj.weight", *transpose),
        (("layers", "mlp", "down_proj"), p + "mlp.down_proj.weight", *transpose),
    ]
    if not c.tie_embeddings:
        rows.append((("lm_head",), "lm_head.weight", *transpose))
    if c.qkv_bias:
        rows += [
            (("layers", "attn", "q_bias"), p + "self_attn.q_proj.bias", *bias(n)),
            (("layers", "attn", "k_bias"), p + "self_attn.k_proj.bias", *bias(k)),
            (("layers", "attn", "v_bias"), p + "self_attn.v_proj.bias", *bias(k)),
        ]
    if c.o_bias:
        rows.append((("layers", "attn", "o_bias"), p + "self_attn.o_proj.bias", *ident))
    if c.qk_norm:
        rows += [
            (("layers", "attn", "q_norm", "scale"), p + "self_attn.q_norm.weight", *ident),
            (("layers", "attn", "k_norm", "scale"), p + "self_attn.k_norm.weight", *ident),
        ]
    if c.mlp_bias:
        rows += [
            (("layers", "mlp", "gate_bias"), p + "mlp.gate_proj.bias", *ident),
            (("layers", "mlp", "up_bias"), p + "mlp.up_proj.bias", *ident),
            (("layers", "mlp", "down_bias"), p + "mlp.down_proj.bias", *ident),
        ]
    return rows


def build_model(config: ModelConfig, get: Callable[[str], np.ndarray | None], source: str,
                available: set[str] | None = None) -> Transformer:
    """Assembles a Transformer from Hugging Face-named tensors returned by `get(name)`.

    `get` returns None for a missing tensor. Shapes are checked against the architecture and every
    failure names the tensor and `source`.
    """
    abstract = abstract_model(config)
    graphdef, state = nnx.split(abstract)
    flat = dict(nnx.to_flat_state(state))
    dtype = jnp.dtype(config.param_dtype)
    used = set()
    for path, template, to_ours, to_hf in _param_table(config):
        var = flat[path]
        stacked = "{i}" in template
        ours_shape = tuple(var.get_value().shape)[1:] if stacked else tuple(var.get_value().shape)
        hf_shape = to_hf(np.empty(ours_shape, np.float32)).shape
        names = [template.format(i=i) for i in range(config.num_layers)] if stacked else [template]
        parts = []
        for name in names:
            w = get(name)
            if w is None:
                raise CheckpointError(f"{source}: missing tensor {name!r}")
            if tuple(w.shape) != hf_shape:
                raise CheckpointError(f"{source}: tensor {name!r} has shape {tuple(w.shape)}, "
                                      f"expected {hf_shape} for this config")
            used.add(name)
            parts.append(to_ours(np.asarray(w)))
        value = np.stack(parts) if stacked else parts[0]
        var.set_value(jnp.asarray(value, dtype))
    if available is not None:
        extra = sorted(n for n in available - used
                       if not n.endswith(IGNORED_SUFFIXES) and not (config.tie_embeddings and n == "lm_head.weight"))
        if extra:
            log.warning("%s: %d tensors not used by the model, e.g. %s", source, len(extra), extra[:5])
    return nnx.merge(graphdef, nnx.from_flat_state(flat))


def _safetensors_files(directory: str) -> list[str]:
    index = os.path.join(directory, "model.safetensors.index.json")
    if os.path.exists(index):
        try:
            with open(index) as f:
                weight_map = json.load(f)["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise CheckpointError(f"{index}: invalid index ({e})") from e
        return [os.path.join(directory, name) for name in sorted(set(weight_map.values()))]
    files = sorted(f for f in os.listdir(directory) if f.endswith(".safetensors"))
    if not files:
        raise CheckpointError(f"{directory}: no *.safetensors files found")
    return [os.path.join(directory, f) for f in files]


def load_hf(directory: str, dtype: str = "float32", compute_dtype: str | None = None) -> Transformer:
    """Loads a Hugging Face directory (config.json + one or many safetensors files)."""
    config = ModelConfig.from_hf(directory, param_dtype=dtype, dtype=compute_dtype or dtype)
    where: dict[str, safetensors_io.SafetensorsFile] = {}
    for file in _safetensors_files(directory):
        st = safetensors_io.SafetensorsFile(file)
        for name in st.keys():
            where[name] = st

    def get(name):
        st = where.get(name)
        return None if st is None else st.get(name)

    return build_model(config, get, directory, available=set(where))


def to_hf_tensors(model: Transformer, dtype: str | None = None) -> dict[str, np.ndarray]:
    """Our parameters as Hugging Face-named numpy arrays."""
    config = model.config
    flat = dict(nnx.to_flat_state(nnx.state(model)))
    out = {}
    for path, template, _, to_hf in _param_table(config):
        value = np.asarray(jax.device_get(flat[path].get_value()))
        if dtype is not None:
            value = value.astype(jnp.dtype(dtype))
        if "{i}" in template:
            for i in range(config.num_layers):
                out[template.format(i=i)] = np.ascontiguousarray(to_hf(value[i]))
        else:
            out[template] = np.ascontiguousarray(to_hf(value))
    return out


def save_hf(model: Transformer, directory: str, *, tokenizer=None, dtype: str | None = None,
            max_shard_bytes: int = 5 * 2**30) -> str:
    """Writes a directory `transformers.AutoModelForCausalLM.from_pretrained` loads.

    Shards above `max_shard_bytes` with a `model.safetensors.index.json`. The directory is built
    next to the target and renamed into place (replacing it whole), so a crash never leaves a
    half-written checkpoint.

    Pass `tokenizer` (e.g. `jaxalign.tokenizer.load("smollm2-135m-instruct")`) to make the export
    complete: without it no tokenizer files are written, `AutoTokenizer.from_pretrained` on the
    directory fails, and a warning says so. The model does not record where its tokenizer came from
    (a fine-tuned or re-initialised model may use another one), so none is guessed.
    """
    directory = os.path.abspath(directory)
    if tokenizer is None:
        log.warning("%s: exported without a tokenizer (no tokenizer.json / tokenizer_config.json), so "
                    "AutoTokenizer.from_pretrained on it will fail; pass tokenizer=... to save_hf (e.g. "
                    "tokenizer=jaxalign.tokenizer.load(<the model's source path or registry name>))", directory)
    tensors = to_hf_tensors(model, dtype)
    config = model.config.to_hf_dict()
    if dtype is not None:
        config["dtype"] = dtype
    parent = os.path.dirname(directory)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-save-", dir=parent)
    try:
        shards: list[dict[str, np.ndarray]] = [{}]
        size = 0
        for name in sorted(tensors):
            if shards[-1] and size + tensors[name].nbytes > max_shard_bytes:
                shards.append({})
                size = 0
            shards[-1][name] = tensors[name]
            size += tensors[name].nbytes
        if len(shards) == 1:
            safetensors_io.save_file(shards[0], os.path.join(tmp, "model.safetensors"))
        else:
            weight_map = {}
            for i, shard in enumerate(shards):
                fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
                safetensors_io.save_file(shard, os.path.join(tmp, fname))
                weight_map.update({name: fname for name in shard})
            total = sum(t.nbytes for t in tensors.values())
            with open(os.path.join(tmp, "model.safetensors.index.json"), "w") as f:
                json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(config, f, indent=2)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if os.path.exists(directory):
            old = directory + f".old-{os.getpid()}"
            os.replace(directory, old)
            os.replace(tmp, directory)
            shutil.rmtree(old)
        else:
            os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory
