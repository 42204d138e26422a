"""Generation throughput: jaxalign's jitted sampler vs transformers `generate` (KV cache).

SmolLM2-135M-Instruct, the same dequantized float32 weights on both sides, batch 8 and batch 32
(plus batch 1 and 2, always: one prompt once decoded 7-10x slower per step than two), 128 new
tokens per row (EOS disabled so both generate exactly 128), plain sampling at
temperature 1 (no top-k/top-p on either side), in one process. Reports milliseconds per decode
step (prefill included, as `generate` includes it) and, for scale, the memory-bandwidth bound:
reading every weight once per step at this machine's measured read bandwidth.
Ends with one line: RESULT {json} (ratio = transformers time / jaxalign time at batch 8; per-step
milliseconds at batch 1 and 2 as b1_ms_per_step, b2_ms_per_step and their b*_baseline_* twins).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import torch

from jaxalign.cli import hostmem


def read_bandwidth_gbs(nbytes: int = 512 * 2**20) -> float:
    """Streaming read bandwidth (GB/s): an XLA reduction over a large float32 array, median of 5."""
    x = jnp.ones((nbytes // 4,), jnp.float32)
    f = jax.jit(jnp.sum)
    f(x).block_until_ready()
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        f(x).block_until_ready()
        times.append(time.perf_counter() - t0)
    return nbytes / statistics.median(times) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 32],
                        help="batch sizes; the first is the headline, 1 and 2 are always added")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    hostmem.add_argument(parser)
    args = parser.parse_args()
    malloc = hostmem.from_args(args)

    from transformers import AutoModelForCausalLM

    from jaxalign import models, tokenizer
    from jaxalign.sampling import Sampler, SamplingConfig

    path = models.resolve("smollm2-135m-instruct")
    ours = models.load(path)
    tok = tokenizer.load(path)
    ref = AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path),
                                               dtype=torch.float32).eval()
    sampler = Sampler(ours, tok)
    n = args.new_tokens
    questions = ["What is the capital of France?", "Write a haiku about rain.", "Explain recursion briefly.",
                 "List three prime numbers.", "What is 17 times 23?", "Describe the color blue.",
                 "Why is the sky blue?", "Give me a fun fact about owls."]
    results = {}
    batches = list(dict.fromkeys([*args.batches, 1, 2]))
    for b in batches:
        prompts = [tok.apply_chat_template([{"role": "user", "content": questions[i % len(questions)]}],
                                           add_generation_prompt=True, tokenize=True, return_dict=False)
                   for i in range(b)]
        width = max(map(len, prompts))
        ids = torch.zeros((b, width), dtype=torch.long)
        mask = torch.zeros((b, width), dtype=torch.long)
        for i, p in enumerate(prompts):  # left padding, as decoder-only generation needs
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1

        def run_ours(prompts=prompts):
            outs = sampler.generate(prompts, SamplingConfig(temperature=1.0), max_new_tokens=n,
                                    stop_token_ids=[], seed=0)
            assert all(len(o.tokens) == n for o in outs)

        def run_torch(ids=ids, mask=mask, width=width):
            with torch.inference_mode():
                out = ref.generate(ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=True,
                                   temperature=1.0, top_k=0, top_p=1.0, pad_token_id=tok.pad_token_id or 0)
            assert out.shape[1] == width + n

        run_ours()  # compile
        ours_t, torch_t = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            run_ours()
            ours_t.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            run_torch()
            torch_t.append(time.perf_counter() - t0)
        o_ms, t_ms = 1000 * statistics.median(ours_t) / n, 1000 * statistics.median(torch_t) / n
        results[b] = (o_ms, t_ms)
        print(f"batch {b:3d}: jaxalign {o_ms:7.1f} ms/step ({b * 1000 / o_ms:7.1f} tokens/s)   "
              f"transformers {t_ms:7.1f} ms/step ({b * 1000 / t_ms:7.1f} tokens/s)   ratio {t_ms / o_ms:.2f}")
    (o1, t1), (o2, t2) = results[1], results[2]
    print(f"single prompt: jaxalign {o1:.1f} ms/step at batch 1 vs {o2:.1f} at batch 2 ({o1 / o2:.2f}x); "
          f"transformers {t1:.1f} vs {t2:.1f} ({t1 / t2:.2f}x)")
    bw = read_bandwidth_gbs()
    weight_bytes = ours.config.num_params() * 4
    bound_ms = weight_bytes / (bw * 1e9) * 1000
    print(f"memory-bandwidth bound: {weight_bytes / 1e6:.0f} MB of float32 weights per step at {bw:.1f} GB/s "
          f"= {bound_ms:.1f} ms/step")
    first = args.batches[0]
    result = {"name": f"generate_smollm2_135m_b{first}_{n}tok", "ours": round(results[first][0], 2),
              "baseline": round(results[first][1], 2), "unit": "ms/step",
              "ratio": round(results[first][1] / results[first][0], 3), "bound_ms_per_step": round(bound_ms, 2),
              "read_bandwidth_gbs": round(bw, 1), "malloc": malloc,
              "b1_ms_per_step": round(o1, 2), "b1_baseline_ms_per_step": round(t1, 2),
              "b2_ms_per_step": round(o2, 2), "b2_baseline_ms_per_step": round(t2, 2)}
    for b, (o, t) in results.items():
        result[f"b{b}_ours_ms"], result[f"b{b}_baseline_ms"], result[f"b{b}_ratio"] = round(o, 2), round(t, 2), \
            round(t / o, 3)
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
