"""The README's reward-model table, measured here: sentence RM vs response RM (same tiny backbone and
data) vs the zero-shot endogenous reward of SmolLM2-135M-Instruct vs chance, on the GSM8K preference
benchmark's test split (split by problem). Writes a JSON summary and prints a markdown table.

The tiny backbone is trained from scratch with a SentencePiece tokenizer fitted on the train
split's texts only. Every method is scored on the same test pairs: those whose sides fit the tiny
models' `max_len` tokens (END tokens included).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="runs/rewards_table")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--max-len", type=int, default=192)
    parser.add_argument("--vocab", type=int, default=4000)
    parser.add_argument("--kinds", default="result,operand,final_answer")
    parser.add_argument("--skip-endo", action="store_true")
    parser.add_argument("--reuse", action="store_true", help="reuse finished runs under --out (their eval.json)")
    parser.add_argument("--endo-pairs", type=int, default=0,
                        help="score the endogenous reward on a seeded subset of this many test pairs (0: all); "
                             "the RMs are then also reported on that subset")
    args = parser.parse_args()

    from jaxalign import tokenizer as toklib
    from jaxalign.data import load_gsm8k, split_problems
    from jaxalign.models import ModelConfig
    from jaxalign.rewards.benchmark import gsm8k_response
    from jaxalign.rewards.evaluation import pairwise_accuracy
    from jaxalign.rewards.sentence.trainer import RMConfig, RMDataConfig, load_pairs, train_rm
    from jaxalign.train.optim import OptimConfig

    os.makedirs(args.out, exist_ok=True)
    kinds = tuple(args.kinds.split(","))
    data = RMDataConfig(kinds=kinds, max_len=args.max_len, length_multiple=args.max_len, ends_multiple=16)
    train_problems, _ = split_problems(load_gsm8k(strip_calculator=True), data.test_fraction, data.benchmark_seed)
    tok_dir = os.path.join(args.out, "tokenizer")
    if not (args.reuse and os.path.exists(os.path.join(tok_dir, "tokenizer_config.json"))):
        toklib.train_sentencepiece([p.question for p in train_problems] + [gsm8k_response(p) for p in train_problems],
                                   tok_dir, vocab_size=args.vocab, split_digits=False)
    base = RMConfig(init=ModelConfig.tiny(num_layers=2, hidden_size=64, intermediate_size=128), tokenizer=tok_dir,
                    head_dim=32, data=data, batch_size=16, epochs=100, max_steps=args.steps, eval_batch_size=32,
                    optim=OptimConfig(learning_rate=3e-3, weight_decay=0.0, warmup_fraction=0.05),
                    save_every=10**6, log_every=50)
    results: dict = {"steps": args.steps, "max_len": args.max_len, "kinds": list(kinds)}
    saved = {}
    for kind in ("sentence", "response"):
        run_dir = os.path.join(args.out, kind)
        if not (args.reuse and os.path.exists(os.path.join(run_dir, "eval.json"))):
            train_rm(dataclasses.replace(base, kind=kind, run_dir=run_dir), resume=False)
        with open(os.path.join(run_dir, "eval.json")) as f:
            saved[kind] = json.load(f)
    # END tokens make the sentence model's inputs longer, so fewer of its pairs fit max_len: every
    # method is scored on the pairs both tiny models kept (the sentence model's).
    test = {p.id: p for p in load_pairs(data, base.seed)[1]}
    kept_ids = [i for i in saved["sentence"]["ids"] if i in set(saved["response"]["ids"])]
    for kind, run in saved.items():
        where = {i: j for j, i in enumerate(run["ids"])}
        idx = [where[i] for i in kept_ids]
        ev = pairwise_accuracy(np.asarray(run["scores"]["chosen"])[idx], np.asarray(run["scores"]["rejected"])[idx],
                               [test[i].category for i in kept_ids])
        if kind == "sentence" and len(kept_ids) == len(run["ids"]):
            ev.update({k: run["eval"][k] for k in ("localisation", "localisation_chance", "localisation_n")})
        results[kind] = {"eval": ev, "train_pairs": run["train_pairs"], "steps": run["steps"],
                         "train_seconds": run["train_seconds"]}
        print(kind, json.dumps(ev), flush=True)
    if not args.skip_endo:
        from jaxalign import models
        from jaxalign.rewards.endo_scorer import EndogenousScorer

        endo_ids = kept_ids
        if args.endo_pairs and args.endo_pairs < len(kept_ids):  # SmolLM2 on a CPU: about a second per response
            pick = np.sort(np.random.default_rng(0).permutation(len(kept_ids))[:args.endo_pairs])
            endo_ids = [kept_ids[i] for i in pick]
            for kind, run in saved.items():
                where = {i: j for j, i in enumerate(run["ids"])}
                idx = [where[i] for i in endo_ids]
                results[kind]["eval_endo_subset"] = pairwise_accuracy(
                    np.asarray(run["scores"]["chosen"])[idx], np.asarray(run["scores"]["rejected"])[idx],
                    [test[i].category for i in endo_ids])
                print(kind, "on the endogenous subset", json.dumps(results[kind]["eval_endo_subset"]), flush=True)
        pairs = [test[i] for i in endo_ids]
        scorer = EndogenousScorer(models.load("smollm2-135m-instruct"), toklib.load("smollm2-135m-instruct"),
                                  batch_size=8)
        t0 = time.perf_counter()
        scores = scorer.score([p.prompt for p in pairs] * 2, [p.chosen for p in pairs] + [p.rejected for p in pairs])
        endo = pairwise_accuracy(scores[:len(pairs)], scores[len(pairs):], [p.category for p in pairs])
        results["endogenous_smollm2_135m"] = {"eval": endo, "seconds": time.perf_counter() - t0}
        print("endogenous", json.dumps(endo), flush=True)
    with open(os.path.join(args.out, "table.json"), "w") as f:
        json.dump(results, f, indent=1)
    rows = [("sentence RM (tiny, from scratch)", results["sentence"]["eval"]),
            ("response RM (tiny, from scratch)", results["response"]["eval"])]
    if "endogenous_smollm2_135m" in results:
        for kind in ("sentence", "response"):
            if "eval_endo_subset" in results[kind]:
                rows.append((f"{kind} RM (tiny), on the endogenous reward's subset", results[kind]["eval_endo_subset"]))
        rows.append(("endogenous reward, SmolLM2-135M-Instruct (zero-shot)",
                     results["endogenous_smollm2_135m"]["eval"]))
    cats = sorted(rows[0][1]["by_category"])
    print(f"\n| method | pairs | accuracy | {' | '.join(cats)} | localisation (chance) |")
    print("|---|---|---|" + "---|" * len(cats) + "---|")
    for name, ev in rows:
        loc = f"{ev['localisation']:.3f} ({ev['localisation_chance']:.3f})" if "localisation" in ev else "-"
        print(f"| {name} | {ev['n']} | {ev['accuracy']:.3f} | "
              + " | ".join(f"{ev['by_category'][c]['accuracy']:.3f}" for c in cats) + f" | {loc} |")
    print(f"| chance | - | 0.500 | {' | '.join('0.500' for _ in cats)} | - |")
    print(f"\n{len(kept_ids)} test pairs; {args.steps} steps of 16 pairs.")

if __name__ == "__main__":
    main()
