"""`jaxalign info MODEL_PATH`: architecture, parameter count, dtype and memory of a checkpoint."""

from __future__ import annotations

import json

from jaxalign.cli.args import DTYPES


def register(sub) -> None:
    p = sub.add_parser("info", help="describe a checkpoint (HF directory, .gguf, or packaged name)")
    p.add_argument("model", help="HF directory, .gguf file, or a packaged name (smollm2-135m-instruct)")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="parameter dtype to size memory for")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def describe(path: str, dtype: str = "float32") -> dict:
    """The facts `jaxalign info` prints, as a mapping."""
    import jax.numpy as jnp

    from jaxalign import models

    config = models.load_config(path)
    n = config.num_params()
    itemsize = jnp.dtype(dtype).itemsize
    kv_per_token = 2 * config.num_layers * config.num_kv_heads * config.head_dim * itemsize
    return {
        "path": models.resolve(path),
        "architecture": config.architecture,
        "layers": config.num_layers,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "heads": config.num_heads,
        "kv_heads": config.num_kv_heads,
        "head_dim": config.head_dim,
        "vocab_size": config.vocab_size,
        "tied_embeddings": config.tie_embeddings,
        "rope": {"theta": config.rope_theta, "scaling": config.rope_scaling.type},
        "parameters": n,
        "dtype": dtype,
        "parameter_memory_gib": round(n * itemsize / 2**30, 4),
        "training_memory_gib_adamw_fp32": round(n * 16 / 2**30, 4),
        "kv_cache_mib_per_1k_tokens": round(kv_per_token * 1024 / 2**20, 3),
        "forward_gflops_per_token_at_1k": round(config.flops_per_token(1024) / 1e9, 3),
    }


def run(args) -> int:
    info = describe(args.model, args.dtype)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    width = max(map(len, info))
    for key, value in info.items():
        if key == "parameters":
            value = f"{value:,} ({value / 1e6:.1f}M)"
        print(f"{key:<{width}}  {value}")
    return 0
