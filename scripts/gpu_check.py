"""GPU check of the attention implementations (one script, a few minutes on one NVIDIA GPU).

1. `cudnn` and `pallas_gpu` against `xla` on the GPU: outputs and gradients w.r.t. q, k, v on
   right-padded rows (what cuDNN's lengths express) and, for pallas_gpu, packed rows.
2. The SFT step (forward, backward, AdamW) of a Qwen3-0.6B-shaped model with random weights, bf16
   compute, at 8K and 16K tokens per row, with each implementation: seconds per step and MFU
   (6 x parameters x tokens + attention FLOPs, over the GPU's bf16 peak given by --peak-tflops).

`--tiny` runs the same code at toy sizes (on CPU the Pallas kernel runs in interpret mode and cuDNN
is skipped), so the script itself is exercised without a GPU. Ends with one line RESULT {json}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxalign import models
from jaxalign.models.attention_ops import attention
from jaxalign.sft import make_sft_step
from jaxalign.train import OptimConfig, make_optimizer
from jaxalign.train.state import init_train_state


def compare(impl: str, t: int, packed: bool) -> dict:
    """Max |difference| to xla of the output and of each gradient (float32 inputs)."""
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.normal(size=(2, t, 8, 64)), jnp.float32)
    k, v = (jnp.asarray(rng.normal(size=(2, t, 2, 64)), jnp.float32) for _ in range(2))
    ids = np.zeros((2, t), np.int32)
    ids[0, : t - t // 5] = 1
    ids[1] = 1
    if packed:
        ids[1, t // 3:] = 2
        ids[1, 2 * t // 3:] = 3
    ids = jnp.asarray(ids)
    out = {}

    def run(name):
        f = lambda q, k, v: attention(q, k, v, segment_ids=ids, implementation=name)  # noqa: E731
        val, vjp = jax.vjp(f, q, k, v)
        return (val, *vjp(jnp.ones_like(val)))

    ref, got = run("xla"), run(impl)
    for name, a, b in zip(("out", "dq", "dk", "dv"), got, ref):
        out[name] = float(jnp.max(jnp.abs(a - b)))
    return out


def sft_step_time(impl: str, t: int, config: models.ModelConfig, peak_tflops: float, steps: int) -> dict:
    model = models.init_model(dataclasses.replace(config, attention=impl), seed=0)
    graphdef, params = nnx.split(model)
    opt = make_optimizer(OptimConfig(learning_rate=1e-5), 100)
    step = jax.jit(make_sft_step(graphdef, opt), donate_argnums=0)
    ids = np.random.default_rng(0).integers(0, config.vocab_size, (1, 1, t), dtype=np.int32)
    batch = {"input_ids": ids, "loss_mask": np.ones_like(ids), "attention_mask": np.ones_like(ids),
             "positions": np.arange(t, dtype=np.int32)[None, None]}
    state = init_train_state(params, opt)
    state, m = step(state, batch)
    jax.block_until_ready(m)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        state, m = step(state, batch)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t0)
    sec = float(np.median(times))
    flops = 3 * config.flops_per_token(t / 2) * t  # fwd + bwd = 3 x forward; causal: mean context t/2
    return {"s_per_step": round(sec, 4), "mfu": round(flops / sec / (peak_tflops * 1e12), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="toy sizes (runs on CPU: interpret mode, no cuDNN)")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="bf16 dense peak (H100/H200 SXM: 989)")
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()
    gpu = jax.default_backend() == "gpu"
    impls = ["pallas_gpu", "cudnn"] if gpu else ["pallas_gpu"]
    t_check = 64 if args.tiny else 1024
    result = {"backend": jax.default_backend(), "device": str(jax.devices()[0]), "checks": {}, "sft": {}}
    for impl in impls:
        for packed in ([False] if impl == "cudnn" else [False, True]):
            key = f"{impl}{'_packed' if packed else ''}"
            result["checks"][key] = compare(impl, t_check, packed)
            print(key, result["checks"][key], flush=True)
    if args.tiny:
        config, lengths = models.ModelConfig.tiny(num_layers=2, max_position_embeddings=256), [64, 128]
    else:
        config = models.ModelConfig(architecture="qwen3", vocab_size=151936, hidden_size=1024,
                                    intermediate_size=3072, num_layers=28, num_heads=16, num_kv_heads=8,
                                    head_dim=128, rope_theta=1e6, tie_embeddings=True, qk_norm=True,
                                    max_position_embeddings=40960, dtype="bfloat16", remat="full")
        lengths = [8192, 16384]
    for impl in impls + ["xla"]:
        for t in lengths:
            try:
                result["sft"][f"{impl}_{t}"] = sft_step_time(impl, t, config, args.peak_tflops, args.steps)
            except Exception as e:  # an implementation that cannot run at this size: say so, go on
                result["sft"][f"{impl}_{t}"] = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
            print(impl, t, result["sft"][f"{impl}_{t}"], flush=True)
    worst = max(v for c in result["checks"].values() for v in c.values())
    best = {k: v["s_per_step"] for k, v in result["sft"].items() if "s_per_step" in v}
    xla_key = f"xla_{lengths[-1]}"
    ours_key = f"{impls[0]}_{lengths[-1]}"
    ours, base = best.get(ours_key, float("nan")), best.get(xla_key, float("nan"))
    print("RESULT " + json.dumps({"name": "gpu_check_attention", "ours": ours, "baseline": base,
                                  "unit": f"s per SFT step at {lengths[-1]} tokens ({impls[0]} vs xla)",
                                  "ratio": round(base / ours, 3) if ours == ours and base == base else None,
                                  "max_abs_diff": worst, **result}))


if __name__ == "__main__":
    main()
