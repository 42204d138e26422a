"""SFT train-step throughput: jaxalign vs transformers/torch + torch.optim.AdamW on SmolLM2-135M.

B=4, T=512, forward + backward + AdamW on the same float32 weights and tokens, in one process,
each side's steps in one block after its warm-up. Reports tokens/s and model FLOPs utilisation
(6 FLOPs per parameter per token plus causal attention, the usual training count) against this
machine's sustained float32 matmul peak measured in the same run (see bench_forward.MatmulPeak).
Ends with one line: RESULT {json}.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys

import jax
import numpy as np
import optax
import torch
from flax import nnx

from jaxalign.cli import hostmem

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_forward import MatmulPeak, timed  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=4)
    hostmem.add_argument(parser)
    args = parser.parse_args()
    malloc = hostmem.from_args(args)

    from transformers import AutoModelForCausalLM

    from jaxalign import models
    from jaxalign.sft.step import make_sft_step
    from jaxalign.train.state import init_train_state

    path = models.resolve("smollm2-135m-instruct")
    ours = models.load(path)
    ref = AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path),
                                               dtype=torch.float32)
    ref.train()
    b, t = args.batch, args.length
    ids = np.random.RandomState(0).randint(0, ours.config.vocab_size, (b, t)).astype(np.int32)

    graphdef, params = nnx.split(ours)
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-5, b1=0.9, b2=0.95, weight_decay=0.0))
    step = jax.jit(make_sft_step(graphdef, opt), donate_argnums=0)
    state = init_train_state(params, opt)
    batch = {"input_ids": ids[None], "loss_mask": np.ones_like(ids)[None], "attention_mask": np.ones_like(ids)[None],
             "positions": np.tile(np.arange(t, dtype=np.int32), (1, b, 1))}

    torch_opt = torch.optim.AdamW(ref.parameters(), lr=1e-5, betas=(0.9, 0.95), weight_decay=0.0)
    tids = torch.from_numpy(ids.astype(np.int64))

    def run_ours():
        nonlocal state
        state, metrics = step(state, batch)
        return float(metrics["loss"])

    def run_torch():
        torch_opt.zero_grad(set_to_none=True)
        out = ref(input_ids=tids, labels=tids)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(ref.parameters(), 1.0)
        torch_opt.step()
        return float(out.loss)

    # Each side runs its steps in one block after its own warm-up step. Interleaved single steps
    # made each side pay for the other's heap use (one allocator per process): the first jaxalign
    # step after a torch step took 30+ s instead of ~20.
    peak_probe = MatmulPeak()
    peak_probe.sample()
    first_ours = run_ours()  # compiles; the same loss as torch on the same weights
    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    ours_t = timed(run_ours, args.repeats)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0) / args.repeats
    peak_probe.sample()
    first_torch = run_torch()
    torch_t = timed(run_torch, args.repeats)
    peak_probe.sample()
    peak = peak_probe.gflops()
    tokens = b * t
    o, r = statistics.median(ours_t), statistics.median(torch_t)
    flops = 3 * tokens * ours.config.flops_per_token((t + 1) / 2)  # forward + backward = 3x forward
    print(f"initial loss: jaxalign {first_ours:.4f}  transformers {first_torch:.4f}")
    print(f"jaxalign     median {o:.2f}s/step  {tokens / o:7.0f} tokens/s  {flops / o / 1e9 / peak:6.1%} of peak  "
          f"(runs {', '.join(f'{x:.2f}' for x in ours_t)})")
    print(f"transformers median {r:.2f}s/step  {tokens / r:7.0f} tokens/s  {flops / r / 1e9 / peak:6.1%} of peak  "
          f"(runs {', '.join(f'{x:.2f}' for x in torch_t)})")
    print(f"float32 matmul peak {peak:.1f} GFLOP/s (sustained, median); {flops / 1e12:.2f} TFLOP per step; "
          f"allocator {malloc}: {faults:.0f} page faults per jaxalign step")
    print("RESULT " + json.dumps({
        "name": f"sft_step_smollm2_135m_b{b}_t{t}", "ours": round(tokens / o, 1), "baseline": round(tokens / r, 1),
        "unit": "tokens/s", "ratio": round(r / o, 3), "mfu_ours": round(flops / o / 1e9 / peak, 3),
        "mfu_baseline": round(flops / r / 1e9 / peak, 3), "peak_gflops": round(peak, 1),
        "initial_loss_ours": round(first_ours, 4), "initial_loss_baseline": round(first_torch, 4), "malloc": malloc,
        "page_faults_per_step_ours": round(faults)}))


if __name__ == "__main__":
    main()
