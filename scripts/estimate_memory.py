"""Per-device memory of an SFT or GRPO config on a slice, from the programs that run, before renting it.

    python scripts/estimate_memory.py configs/sft/qwen3_4b_tpu.yaml data.seq_len=32768 \
        --model-config configs/model/qwen3_4b.yaml --devices 16 --target tpu --hbm-gb 95

Every figure is XLA's memory analysis of a compiled program (arguments + outputs - donated aliases
+ temporaries, per device) with abstract inputs, so nothing is allocated:

* SFT: the train step (`jaxalign.plan.memory.estimate`).
* GRPO, one phase per program, each with what stays resident while it runs: the train step (plus the
  sampler's decode-layout weights), the log-prob pass over the whole batch in micro-batches (plus
  the optimizer state and the sampler's weights), and the rollout's prepare / prefill / append /
  decode on a host's rollout mesh (plus the train state). Phases run one after another, so the
  peak is their maximum.

Deep models compile as two shallow proxies extrapolated in depth. `--devices N` compiles for N
fake CPU devices; `--target` picks what the slice would run: attention `splash` on TPU and
`pallas_gpu` on GPU (Pallas interpret mode here; the config's `run.attention` wins when set) and a
bfloat16 KV cache. `--state-only` gives the exact state sizes in seconds instead. Ends with
RESULT {"name", "peak_gib", "phases", "hbm_gb", "fits", "ours", "baseline", "unit", "ratio", ...}:
ours is the peak in GiB, baseline the usable memory (hbm_gb less the margin) in GiB.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

GiB = 1024**3
ATTENTION = {"tpu": "splash", "gpu": "pallas_gpu", "cpu": "xla"}


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="an SFT or GRPO YAML config (configs/sft/*.yaml, configs/grpo/*.yaml)")
    p.add_argument("overrides", nargs="*", help="a.b=value overrides of the config")
    p.add_argument("--model-config", default="", help="ModelConfig YAML when the config's checkpoint is not here")
    p.add_argument("--devices", type=int, default=0, help="compile for this many fake CPU devices (0: this machine)")
    p.add_argument("--hosts", type=int, default=0, help="hosts of the slice (rollout rows per host); default devices/4")
    p.add_argument("--target", choices=sorted(ATTENTION), default="tpu", help="the slice's backend (default tpu)")
    p.add_argument("--hbm-gb", type=float, default=0.0, help="memory per device in GB (1e9 bytes): v5p 95, H200 141")
    p.add_argument("--margin", type=float, default=0.1, help="fraction of the memory kept free to call it a fit")
    p.add_argument("--prompt-len", type=int, default=1024, help="GRPO: prompt tokens allowed for")
    p.add_argument("--state-only", action="store_true", help="only the exact state sizes (no compilation)")
    return p.parse_intermixed_args()


def grpo_phases(config, model, mesh, hosts: int, prompt_len: int, state: dict, train_peak: int | None) -> dict:
    """Per-device bytes of each GRPO phase (see the module docstring)."""
    import jax

    from jaxalign import sharding
    from jaxalign.plan import programs
    from jaxalign.sampling.sampler import bucket

    longest = max(s.max_response_tokens for s in config.schedule())
    local = jax.devices()[:jax.device_count() // hosts]
    t = mesh.shape["tensor"] if len(local) % mesh.shape["tensor"] == 0 else 1
    rollout_mesh = sharding.make_mesh(config.rollout_mesh or sharding.MeshConfig(data=1, fsdp=len(local) // t,
                                                                                 tensor=t), local)
    r = config.rollout
    shards = sharding.batch_shards(rollout_mesh, sharding.ROLLOUT_RULES)
    rows = -(-bucket(config.prompts_per_step * config.group_size // hosts, minimum=1) // shards) * shards
    width = bucket(prompt_len)
    slack = max(r.steps_per_call, bucket(r.max_tool_output_tokens, minimum=8))
    shape = programs.RolloutShape(rows=rows, cache_size=bucket(width + longest + 2 * slack), prompt_len=width,
                                  append_len=bucket(r.max_tool_output_tokens + 32, minimum=8),  # + tool-turn wrapper
                                  max_tokens=min(bucket(r.max_segment_tokens), bucket(longest)))
    print(f"rollout per host: {shape.rows} rows x {shape.cache_size} cache slots on "
          f"{' x '.join(str(rollout_mesh.shape[a]) for a in sharding.MESH_AXES)} devices, prompt {shape.prompt_len}, "
          f"append {shape.append_len}, KV cache {model.kv_cache_dtype or model.dtype}")
    roll = programs.rollout_bytes(model, rollout_mesh, shape)
    total = config.prompts_per_step * config.group_size
    micro = total // (config.mini_batches * config.micro_batches)
    row_len = bucket(prompt_len + longest)
    lp = programs.logprob_pass_bytes(model, mesh, total, row_len,
                                     micro if micro % sharding.batch_shards(mesh, sharding.TRAIN_RULES) == 0 else None)
    train_state = state["params"] + state["opt_state"]
    phases = {f"rollout_{k}": train_state + roll[k] for k in ("prepare", "prefill", "append", "decode")}
    phases["logprob_pass"] = lp["logprob_pass"] + state["opt_state"] + roll["weights"]
    if train_peak is not None:
        phases["train_step"] = train_peak + roll["weights"]
    return phases, {"rollout_weights": roll["weights"], "rollout_kv_cache": roll["kv_cache"]}


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
    kv = (config.rollout.kv_cache_dtype if kind == "grpo" else None) or (None if args.target == "cpu" else "bfloat16")
    model = dataclasses.replace(model, dtype=config.run.compute_dtype, param_dtype="float32",
                                remat=config.run.remat if config.run.remat is not None else model.remat,
                                attention=config.run.attention or ATTENTION[args.target], kv_cache_dtype=kv)
    devices = jax.device_count()
    mesh_shape = config.run.mesh.shape(devices)
    hosts = args.hosts or max(devices // 4, 1)
    if kind == "sft":
        step = memory.StepShape(kind="sft", rows=config.batch_size, seq_len=config.data.seq_len,
                                accum=config.grad_accum)
    else:
        longest = max(s.max_response_tokens for s in config.schedule())
        mini = config.prompts_per_step * config.group_size // config.mini_batches
        step = memory.StepShape(kind="grpo", rows=mini // config.micro_batches, accum=config.micro_batches,
                                seq_len=bucket(args.prompt_len + longest), kl=config.loss.kl_coef > 0)

    print(f"{args.config}: {kind}, {model.num_params() / 1e9:.2f}B parameters, mesh data x fsdp x tensor = "
          f"{' x '.join(map(str, mesh_shape))} on {devices} {jax.devices()[0].platform} devices, target "
          f"{args.target} (attention {model.attention})")
    print(f"train step: {step.rows} rows x {step.seq_len} tokens" + (f" x {step.accum} micro-batches"
                                                                    if step.accum > 1 else "")
          + f", compute {model.dtype}, remat {model.remat}")
    mesh = sharding.make_mesh(config.run.mesh)
    state = memory.state_bytes(model, mesh_shape)
    extra = {}
    if args.state_only:
        phases = {"train_state": state["params"] + state["grads"] + state["opt_state"]}
    else:
        train = memory.estimate(model, mesh, step)
        phases = {"train_step": train["peak"]}
        if kind == "grpo":
            phases, extra = grpo_phases(config, model, mesh, hosts, args.prompt_len, state, train["peak"])
    for name, value in {"parameters (f32)": state["params"], "AdamW moments": state["opt_state"], **extra}.items():
        print(f"  {name:<28} {value / GiB:9.2f} GiB per device")
    for name, value in phases.items():
        print(f"  phase {name:<22} {value / GiB:9.2f} GiB per device")
    peak = max(phases.values())
    usable = args.hbm_gb * 1e9 * (1 - args.margin)
    fits = bool(args.hbm_gb) and peak <= usable
    print(f"  {'peak (max over phases)':<28} {peak / GiB:9.2f} GiB per device" +
          (f"  -> {'fits' if fits else 'does NOT fit'} in {args.hbm_gb:g} GB with {args.margin:.0%} kept free"
           if args.hbm_gb else ""))
    ours, baseline = peak / GiB, usable / GiB
    summary = {"name": f"estimate_memory:{os.path.basename(args.config)}", "kind": kind, "target": args.target,
               "devices": devices, "mesh": mesh_shape, "peak_gib": round(ours, 3),
               "phases": {k: round(v / GiB, 3) for k, v in phases.items()}, "hbm_gb": args.hbm_gb, "fits": fits,
               "ours": round(ours, 3), "baseline": round(baseline, 3), "unit": "GiB per device",
               "ratio": round(ours / baseline, 3) if baseline else None,
               "per_device_bytes": {**state, **extra, **phases, "peak": peak}}
    print("RESULT " + json.dumps(summary))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
