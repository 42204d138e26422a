"""The README's reward-model table, measured here: sentence RM vs response RM (same tiny backbone and
data) vs the zero-shot endogenous reward of SmolLM2-135M-Instruct vs chance, on the GSM8K preference
benchmark's test split (split by problem). Writes a JSON summary and prints a markdown table.

The tiny backbone is trained from scratch with a SentencePiece tokenizer fitted on the train
split's texts only. Every method is scored on the same test pairs: those whose sides fit the tiny
models' `max_len` tokens (END tokens included).

`--smollm2-frozen N` adds the SmolLM2-135M-Instruct rows: the sentence and response RMs with a
frozen backbone and trained heads on cached features (RMConfig.cache_features), trained on a seeded
subset of N benchmark train pairs and scored on the endogenous reward's seeded test subset. The
heads' learning rate is chosen on a held-out part (by problem) of those train pairs, never on test.
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
    parser.add_argument("--smollm2-frozen", type=int, default=0, metavar="N",
                        help="also train the SmolLM2-135M frozen-backbone RMs (cached features) on N train pairs "
                             "and score them on the --endo-pairs subset")
    parser.add_argument("--frozen-lrs", default="1e-4,3e-4,1e-3,3e-3,1e-2",
                        help="head learning rates tried on the holdout")
    parser.add_argument("--frozen-epochs", type=int, default=30)
    parser.add_argument("--only-smollm2-frozen", action="store_true",
                        help="skip the tiny RMs and the endogenous reward: find the test pairs they are scored on "
                             "by encoding alone, then run --smollm2-frozen")
    args = parser.parse_args()

    from jaxalign import tokenizer as toklib
    from jaxalign.data import load_gsm8k, split_problems
    from jaxalign.models import ModelConfig
    from jaxalign.rm.benchmark import gsm8k_response
    from jaxalign.rm.evaluation import pairwise_accuracy
    from jaxalign.rm.trainer import RMConfig, RMDataConfig, load_pairs, train_rm
    from jaxalign.train.config import RunConfig
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
                    run=RunConfig(run_dir="runs/rm", save_every=10**6, log_every=50, export_hf=False))
    results: dict = {"steps": args.steps, "max_len": args.max_len, "kinds": list(kinds)}
    if args.only_smollm2_frozen:
        kept_ids = tiny_kept_ids(base)
        test = {p.id: p for p in load_pairs(data, base.run.seed)[1]}
        subset = [test[i] for i in endo_subset(kept_ids, args.endo_pairs)]
        results["smollm2_frozen"] = smollm2_frozen(args, data, subset)
        results["smollm2_frozen"]["tiny_kept_pairs"] = len(kept_ids)
        with open(os.path.join(args.out, "table_smollm2_frozen.json"), "w") as f:
            json.dump(results, f, indent=1)
        for kind in ("sentence", "response"):
            ev = results["smollm2_frozen"][kind]["eval"]
            print(table_row(f"{kind} RM, SmolLM2-135M-Instruct, frozen backbone, heads trained", ev,
                            sorted(ev["by_category"])))
        return
    saved = {}
    for kind in ("sentence", "response"):
        run_dir = os.path.join(args.out, kind)
        if not (args.reuse and os.path.exists(os.path.join(run_dir, "eval.json"))):
            run = dataclasses.replace(base.run, run_dir=run_dir)
            train_rm(dataclasses.replace(base, kind=kind, run=run), resume=False)
        with open(os.path.join(run_dir, "eval.json")) as f:
            saved[kind] = json.load(f)
    # END tokens make the sentence model's inputs longer, so fewer of its pairs fit max_len: every
    # method is scored on the pairs both tiny models kept (the sentence model's).
    test = {p.id: p for p in load_pairs(data, base.run.seed)[1]}
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

        endo_ids = endo_subset(kept_ids, args.endo_pairs)
        if endo_ids != kept_ids:
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
    if args.smollm2_frozen:
        test_pairs = [test[i] for i in endo_subset(kept_ids, args.endo_pairs)]
        results["smollm2_frozen"] = smollm2_frozen(args, data, test_pairs)
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
    for kind in ("sentence", "response"):
        if kind in results.get("smollm2_frozen", {}):
            rows.append((f"{kind} RM, SmolLM2-135M-Instruct, frozen backbone, heads trained",
                         results["smollm2_frozen"][kind]["eval"]))
    cats = sorted(rows[0][1]["by_category"])
    print(f"\n| method | pairs | accuracy | {' | '.join(cats)} | localisation (chance) |")
    print("|---|---|---|" + "---|" * len(cats) + "---|")
    for name, ev in rows:
        print(table_row(name, ev, cats))
    print(f"| chance | - | 0.500 | {' | '.join('0.500' for _ in cats)} | - |")
    print(f"\n{len(kept_ids)} test pairs; {args.steps} steps of 16 pairs.")


def table_row(name: str, ev: dict, cats: list[str]) -> str:
    """One markdown row of the table: pairs, accuracy, accuracy per category, localisation."""
    loc = f"{ev['localisation']:.3f} ({ev['localisation_chance']:.3f})" if "localisation" in ev else "-"
    return (f"| {name} | {ev['n']} | {ev['accuracy']:.3f} | "
            + " | ".join(f"{ev['by_category'][c]['accuracy']:.3f}" for c in cats) + f" | {loc} |")


def tiny_kept_ids(base) -> list[str]:
    """Ids of the test pairs whose sides fit the tiny models' max_len with END tokens and without (what
    the tiny runs' eval.json files hold), found by encoding alone."""
    from jaxalign import tokenizer as toklib
    from jaxalign.rewards.sentence.encode import add_end_token
    from jaxalign.rm.trainer import encode, load_pairs

    tok = toklib.load(base.tokenizer)
    end_id = add_end_token(tok)
    test = load_pairs(base.data, base.run.seed)[1]
    sentence = encode(dataclasses.replace(base, kind="sentence"), test, tok, end_id)
    response = {p.id for p in encode(dataclasses.replace(base, kind="response"), test, tok, None).pairs}
    return [p.id for p in sentence.pairs if p.id in response]


def endo_subset(kept_ids: list[str], n: int) -> list[str]:
    """The seeded subset of `n` test pairs that the endogenous reward (and the SmolLM2 RMs) are scored on."""
    if not n or n >= len(kept_ids):
        return kept_ids
    pick = np.sort(np.random.default_rng(0).permutation(len(kept_ids))[:n])
    return [kept_ids[i] for i in pick]


def smollm2_frozen(args, data, test_pairs) -> dict:
    """Sentence and response RMs on the frozen SmolLM2-135M-Instruct backbone, heads trained on cached
    features; the learning rate is picked on a held-out fifth (by problem) of the train subset."""
    from jaxalign.data import write_jsonl
    from jaxalign.rm.trainer import RMConfig, load_pairs, train_rm
    from jaxalign.train.config import RunConfig
    from jaxalign.train.optim import OptimConfig

    out = os.path.join(args.out, "smollm2_frozen")
    os.makedirs(out, exist_ok=True)
    frozen_data = dataclasses.replace(data, max_train_pairs=args.smollm2_frozen, max_len=512, length_multiple=32)
    train = load_pairs(frozen_data, 0)[0]
    problems = sorted({p.meta["problem_id"] for p in train})
    held = set(np.random.default_rng(1).permutation(problems)[:len(problems) // 5].tolist())
    files = {"train": train, "fit": [p for p in train if p.meta["problem_id"] not in held],
             "holdout": [p for p in train if p.meta["problem_id"] in held], "test": test_pairs}
    for name, pairs in files.items():
        write_jsonl(os.path.join(out, f"{name}.jsonl"), pairs)
    base = RMConfig(model="smollm2-135m-instruct", freeze_backbone=True, cache_features=True,
                    features_dir=os.path.join(out, "features"), head_dim=256, batch_size=16, epochs=args.frozen_epochs,
                    eval_batch_size=64,
                    run=RunConfig(run_dir="runs/rm", save_every=10**6, log_every=100, export_hf=False),
                    data=dataclasses.replace(frozen_data, max_train_pairs=0, max_test_pairs=0))
    result: dict = {"train_pairs": len(train), "fit_pairs": len(files["fit"]), "holdout_pairs": len(files["holdout"]),
                    "epochs": args.frozen_epochs}
    def run(kind, name, train_file, test_file, lr):
        run_dir = os.path.join(out, f"{kind}-{name}")
        if args.reuse and os.path.exists(os.path.join(run_dir, "eval.json")):
            with open(os.path.join(run_dir, "eval.json")) as f:
                return json.load(f)
        cfg = dataclasses.replace(base, kind=kind, run=dataclasses.replace(base.run, run_dir=run_dir),
                                  optim=OptimConfig(learning_rate=lr, weight_decay=0.0, warmup_fraction=0.05),
                                  data=dataclasses.replace(base.data, train=os.path.join(out, train_file),
                                                           test=os.path.join(out, test_file)))
        summary = train_rm(cfg, resume=True)  # a finished run is evaluated again, an interrupted one resumed
        summary.pop("model")
        return summary

    for kind in ("sentence", "response"):
        sweep = {}
        for lr in (float(x) for x in args.frozen_lrs.split(",")):
            sweep[lr] = run(kind, f"select-lr{lr:g}", "fit.jsonl", "holdout.jsonl", lr)
            print(kind, "lr", lr, "holdout accuracy", sweep[lr]["eval"]["accuracy"], flush=True)
        best = max(sweep, key=lambda lr: sweep[lr]["eval"]["accuracy"])
        final = run(kind, "final", "train.jsonl", "test.jsonl", best)
        result[kind] = {"lr": best, "holdout": {lr: s["eval"]["accuracy"] for lr, s in sweep.items()},
                        "eval": final["eval"], "steps": final["steps"], "train_seconds": final["train_seconds"],
                        "features": {name: s.get("features") for name, s in [("select", sweep[min(sweep)]),
                                                                             ("final", final)]}}
        print(kind, "SmolLM2 frozen", json.dumps(result[kind]), flush=True)
    return result


if __name__ == "__main__":
    main()
