"""Per-device memory of an SFT or GRPO config on a mesh, to pick a slice before renting it.

    python scripts/estimate_memory.py configs/sft/qwen3_4b_tpu.yaml --model-config configs/model/qwen3_4b.yaml \
        --devices 16 --hbm-gb 16

* parameters, gradients, AdamW moments: exact, from `jax.eval_shape` and the training rule table;
* rollout (GRPO): weights in the rollout layout and the KV cache, from the same shapes;
* the train step's peak (state + activations + temporaries): from the compiled step's own memory
  analysis, two shallow proxies extrapolated in depth (`jaxalign.plan.memory.estimate`).

`--devices N` compiles for N fake CPU devices (no accelerator needed; nothing is allocated). Without
it the devices of this machine are used (run it on the slice itself for its compiler's figures).
`--state-only` skips compilation (seconds instead of minutes). Prints a table, then RESULT {json}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

GiB = 1024**3


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="an SFT or GRPO YAML config (configs/sft/*.yaml, configs/grpo/*.yaml)")
    p.add_argument("overrides", nargs="*", help="a.b=value overrides of the config")
    p.add_argument("--model-config", default="", help="ModelConfig YAML when the config's checkpoint is not here")
    p.add_argument("--devices", type=int, default=0, help="compile for this many fake CPU devices (0: this machine)")
    p.add_argument("--hosts", type=int, default=0, help="hosts of the slice (rollout rows per host); default devices/4")
    p.add_argument("--hbm-gb", type=float, default=0.0, help="memory per device, to say whether it fits")
    p.add_argument("--prompt-len", type=int, default=1024, help="GRPO: prompt tokens allowed for (row length)")
    p.add_argument("--state-only", action="store_true", help="only the exact state sizes (no compilation)")
    return p.parse_args()


def main() -> None:
    args = parse()
    if args.devices:  # before JAX initialises: fake CPU devices of the slice's count
        os.environ["JAX_PLATFORMS"] = "cpu"
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   f" --xla_force_host_platform_device_count={args.devices}").strip()
    import jax
    import yaml

    from jaxalign import config as cfglib
    from jaxalign import models, sharding
    from jaxalign.models import ModelConfig
    from jaxalign.plan import memory
    from jaxalign.rl.config import GRPOConfig
    from jaxalign.sampling.sampler import bucket
    from jaxalign.sft.trainer import SFTConfig

    with open(args.config) as f:
        raw = yaml.safe_load(f) or {}
    kind = "grpo" if "group_size" in raw or "prompts_per_step" in raw else "sft"
    config = cfglib.load(GRPOConfig if kind == "grpo" else SFTConfig, args.config, args.overrides)
    if args.model_config:
        model = cfglib.load(ModelConfig, args.model_config)
    elif kind == "sft" and config.init is not None:
        model = config.init
    else:
        model = models.load_config(config.model)
    model = dataclasses.replace(model, dtype=config.run.compute_dtype, param_dtype="float32",
                                remat=config.run.remat if config.run.remat is not None else model.remat)
    devices = jax.device_count()
    mesh_shape = config.run.mesh.shape(devices)
    hosts = args.hosts or max(devices // 4, 1)
    if kind == "sft":
        step = memory.StepShape(kind="sft", rows=config.batch_size, seq_len=config.data.seq_len,
                                accum=config.grad_accum)
        rollout = None
    else:
        longest = max(s.max_response_tokens for s in config.schedule())
        row_len = bucket(args.prompt_len + longest)
        mini = config.prompts_per_step * config.group_size // config.mini_batches
        step = memory.StepShape(kind="grpo", rows=mini // config.micro_batches, seq_len=row_len,
                                accum=config.micro_batches, kl=config.loss.kl_coef > 0)
        local = devices // hosts
        tensor = config.rollout_mesh.tensor if config.rollout_mesh is not None else mesh_shape[2]
        rows_per_device = -(-config.prompts_per_step * config.group_size // hosts) // max(local // tensor, 1)
        rollout = memory.rollout_bytes(model, tensor, rows_per_device, row_len, config.run.compute_dtype)

    print(f"{args.config}: {kind}, {model.num_params() / 1e9:.2f}B parameters, mesh data x fsdp x tensor = "
          f"{' x '.join(map(str, mesh_shape))} on {devices} devices ({jax.devices()[0].platform})")
    print(f"train step: {step.rows} rows x {step.seq_len} tokens" + (f" x {step.accum} micro-batches"
                                                                    if step.accum > 1 else "")
          + f", compute {config.run.compute_dtype}, remat {model.remat}")
    mesh = sharding.make_mesh(config.run.mesh)
    result = memory.state_bytes(model, mesh_shape)
    if not args.state_only:
        result = memory.estimate(model, mesh, step)
    rows = [("parameters (f32, FSDP + TP)", result["params"]), ("gradients", result["grads"]),
            ("AdamW moments", result["opt_state"])]
    if "peak" in result:
        rows.append(("train step peak (state + activations)", result["peak"]))
    if rollout is not None:
        rows += [("rollout weights (TP only)", rollout["weights"]), ("rollout KV cache", rollout["kv_cache"])]
    for name, value in rows:
        print(f"  {name:<40} {value / GiB:9.2f} GiB per device")
    need = result.get("peak", result["params"] + result["grads"] + result["opt_state"])
    if rollout is not None:
        need += rollout["weights"] + rollout["kv_cache"]  # both live while the sampler holds its weights
    print(f"  {'total (train + rollout)' if rollout else 'total':<40} {need / GiB:9.2f} GiB per device"
          + (f"  -> {'fits' if need <= args.hbm_gb * GiB else 'does NOT fit'} in {args.hbm_gb:g} GiB"
             if args.hbm_gb else ""))
    summary = {"config": args.config, "kind": kind, "devices": devices, "mesh": mesh_shape,
               "per_device_bytes": {**{k: v for k, v in result.items() if isinstance(v, int)},
                                    **({f"rollout_{k}": v for k, v in rollout.items()} if rollout else {}),
                                    "total": need}}
    print("RESULT " + json.dumps(summary))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
