"""Endogenous-reward scoring throughput: jaxalign vs the same formula on transformers/torch logits.

SmolLM2-135M-Instruct scores (prompt, response) pairs from the GSM8K preference benchmark (both
sides of each pair: the chat-templated prompt, then the response and its end-of-turn token). Both
implementations run the same float32 weights (the HF model is written from ours with
`jaxalign.models.save_hf`) on the same token ids and the same length-sorted batches, in this one
process, interleaved so machine noise hits both alike:

* jaxalign: `EndogenousScorer` (jitted; the output head only over the response window, chunked);
* baseline: HF `model(ids, attention_mask).logits`, then r_t = logits[t-1, a_t] - V_next in torch.

Prints the largest score difference between the two. Ends with one line: RESULT {json}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import numpy as np
import torch

from jaxalign import hostmem


def torch_scores(model, batches, alpha: float) -> list[float]:
    """The endogenous response reward (terminal "zero") from HF logits, batch by batch."""
    out = []
    for ids, mask, resp in batches:
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=mask).logits.float()   # [B, T, V]
            values = alpha * torch.logsumexp(logits / alpha, dim=-1)            # V(logits[t])
            picked = torch.gather(logits[:, :-1], 2, ids[:, 1:, None])[..., 0]  # logits[t-1, a_t] at t >= 1
            picked = torch.nn.functional.pad(picked, (1, 0))
            next_resp = torch.nn.functional.pad(resp[:, 1:], (0, 1))
            r = torch.where(resp, picked - torch.where(next_resp, values, 0.0), 0.0)
            out += r.sum(-1).double().tolist()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=16, help="preference pairs (2 responses each)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--alpha", type=float, default=1.0)
    hostmem.add_argument(parser)
    args = parser.parse_args()
    malloc = hostmem.from_args(args)

    from transformers import AutoModelForCausalLM

    from jaxalign import models, tokenizer
    from jaxalign.rewards.endo_scorer import EndogenousScorer
    from jaxalign.rm.benchmark import gsm8k_benchmark

    ours = models.load("smollm2-135m-instruct")
    tok = tokenizer.load("smollm2-135m-instruct")
    with tempfile.TemporaryDirectory() as d:
        models.save_hf(ours, d)
        ref = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    pairs = gsm8k_benchmark()[1][:args.pairs]
    prompts = [p.prompt for p in pairs] * 2
    responses = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    scorer = EndogenousScorer(ours, tok, alpha=args.alpha, batch_size=args.batch)

    # The baseline's batches: the same length-sorted groups, right-padded to their longest row.
    encoded = [scorer.encode(p, r) for p, r in zip(prompts, responses)]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
    batches, batch_rows = [], []
    for s in range(0, len(order), args.batch):
        idx = order[s:s + args.batch]
        t = max(len(encoded[i][0]) for i in idx)
        ids = torch.zeros((len(idx), t), dtype=torch.long)
        mask = torch.zeros((len(idx), t), dtype=torch.long)
        resp = torch.zeros((len(idx), t), dtype=torch.bool)
        for j, i in enumerate(idx):
            row, start = encoded[i]
            ids[j, :len(row)] = torch.tensor(row)
            mask[j, :len(row)] = 1
            resp[j, start:len(row)] = True
        batches.append((ids, mask, resp))
        batch_rows.append(idx)

    def run_torch():
        flat = torch_scores(ref, batches, args.alpha)
        out = np.zeros(len(encoded))
        out[[i for idx in batch_rows for i in idx]] = flat
        return out

    def run_ours():
        return scorer.score(prompts, responses)

    got, want = run_ours(), run_torch()  # warm-up (compiles every length bucket) and the numerical check
    max_diff = float(np.abs(got - want).max())
    tokens = sum(len(ids) for ids, _ in encoded)
    ours_t, torch_t = [], []
    for _ in range(args.repeats):  # interleaved
        t0 = time.perf_counter()
        run_ours()
        ours_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        run_torch()
        torch_t.append(time.perf_counter() - t0)
    n = len(encoded)
    ours_s, torch_s = statistics.median(ours_t), statistics.median(torch_t)
    print(f"{n} (prompt, response) pairs, {tokens} tokens, batch {args.batch}; max |score diff| {max_diff:.2e} "
          f"(scores around {np.abs(want).mean():.1f})")
    print(f"jaxalign     median {ours_s:.2f}s  {n / ours_s:6.2f} pairs/s  "
          f"(runs {', '.join(f'{x:.2f}' for x in ours_t)})")
    print(f"transformers median {torch_s:.2f}s  {n / torch_s:6.2f} pairs/s  "
          f"(runs {', '.join(f'{x:.2f}' for x in torch_t)}); torch threads {torch.get_num_threads()}")
    result = {"name": f"endogenous_reward_smollm2_135m_b{args.batch}", "ours": round(n / ours_s, 3),
              "baseline": round(n / torch_s, 3), "unit": "pairs/s", "ratio": round(torch_s / ours_s, 3),
              "max_score_diff": max_diff, "malloc": malloc}
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
