"""`jaxalign endo score|eval`: the endogenous reward of a language model (no training needed).

    jaxalign endo score smollm2-135m-instruct pairs.jsonl -o scores.jsonl   # rows {"prompt", "response"[, "id"]}
    jaxalign endo score smollm2-135m-instruct --prompt "2+3?" --response "5"
    jaxalign endo eval smollm2-135m-instruct [--pairs prefs.jsonl]          # default: GSM8K benchmark test split
"""

from __future__ import annotations

import json
import os

from jaxalign.cli.args import DTYPES, non_negative_int, positive_float, positive_int
from jaxalign.data.checks import DataError
from jaxalign.errors import InputError
from jaxalign.runlog.files import check_output, write_text_atomic


def _common(p) -> None:
    p.add_argument("model", help="HF directory, .gguf file or packaged name (e.g. smollm2-135m-instruct)")
    p.add_argument("--tokenizer", default="", help="tokenizer path (default: the model's)")
    p.add_argument("--alpha", type=positive_float, default=1.0,
                   help="entropy coefficient alpha of V = alpha*logsumexp(l/alpha)")
    p.add_argument("--terminal", choices=("zero", "bootstrap"), default="zero", help="value after the last token")
    p.add_argument("--system-prompt", default=None, help="a principle / system message that customises the reward")
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="compute dtype")
    p.add_argument("-o", "--output", default="", help="write results here (JSONL for score, JSON for eval)")


def register(sub) -> None:
    p = sub.add_parser("endo", help="endogenous reward: a language model's logits as a soft Q-function")
    endo_sub = p.add_subparsers(dest="endo_command", required=True, metavar="ACTION")
    s = endo_sub.add_parser("score", help="score (prompt, response) pairs")
    _common(s)
    s.add_argument("input", nargs="?", default="", help='JSONL rows {"prompt", "response"[, "id"]}')
    s.add_argument("--prompt", default=None, help="score one pair: its prompt")
    s.add_argument("--response", default=None, help="score one pair: its response")
    s.add_argument("--tokens", action="store_true", help="also output the per-token rewards")
    s.set_defaults(func=run_score)
    e = endo_sub.add_parser("eval", help="pairwise accuracy on preference pairs (chosen scored above rejected)")
    _common(e)
    e.add_argument("--pairs", default="", help="preference JSONL (default: the GSM8K benchmark's test split)")
    e.add_argument("--max-pairs", type=non_negative_int, default=0, help="evaluate the first N pairs (0: all)")
    e.add_argument("--seed", type=int, default=0, help="seed of the built-in benchmark")
    e.set_defaults(func=run_eval)


def read_score_rows(path: str) -> list[dict]:
    """Rows {"id", "prompt", "response"} of a JSONL file; errors name the file, the row and the field."""
    from jaxalign.data.checks import check_keys, require_object, take

    if not os.path.exists(path):
        raise DataError(f"{path}: no such file")
    rows = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}: row {line_no}"
            try:
                row = require_object(json.loads(line), where)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: invalid JSON: {e.msg} (column {e.colno})") from None
            check_keys(row, ("id", "prompt", "response"), where)
            rows.append({"id": take(row, "id", str, where, required=False, default=str(len(rows))),
                         "prompt": take(row, "prompt", str, where, nonempty=True),
                         "response": take(row, "response", str, where)})
    return rows


def _scorer(args):
    from jaxalign import models, tokenizer
    from jaxalign.rewards.endo_scorer import EndogenousScorer

    model = models.load(args.model, compute_dtype=args.dtype)
    tok = tokenizer.load(args.tokenizer or args.model)
    return EndogenousScorer(model, tok, alpha=args.alpha, terminal=args.terminal, system_prompt=args.system_prompt,
                            batch_size=args.batch_size)


def run_score(args) -> int:
    if (args.prompt is None) != (args.response is None):
        raise InputError("give both --prompt and --response, or an input file")
    if args.prompt is not None:
        rows = [{"id": "0", "prompt": args.prompt, "response": args.response}]
    elif args.input:
        rows = read_score_rows(args.input)
    else:
        raise InputError("give an input JSONL file or --prompt/--response")
    if not rows:
        raise DataError(f"{args.input}: no rows to score")
    if args.output:
        check_output(args.output, "--output")
    scorer = _scorer(args)
    per_token = scorer.token_rewards([r["prompt"] for r in rows], [r["response"] for r in rows])
    lines = []
    for r, t in zip(rows, per_token):
        out = {"id": r["id"], "reward": float(t.sum(dtype="float64")), "tokens": int(t.size)}
        if args.tokens:
            out["token_rewards"] = [round(float(x), 6) for x in t]
        lines.append(json.dumps(out))
    text = "\n".join(lines) + "\n"
    if args.output:
        write_text_atomic(args.output, text)
    print(text, end="")
    return 0


def run_eval(args) -> int:
    from jaxalign.data import read_jsonl
    from jaxalign.rm.benchmark import gsm8k_benchmark
    from jaxalign.rm.evaluation import pairwise_accuracy

    pairs = read_jsonl(args.pairs, "preferences") if args.pairs else gsm8k_benchmark(seed=args.seed)[1]
    pairs = pairs[:args.max_pairs] if args.max_pairs else pairs
    if args.output:
        check_output(args.output, "--output")
    scorer = _scorer(args)
    scores = scorer.score([p.prompt for p in pairs] * 2, [p.chosen for p in pairs] + [p.rejected for p in pairs])
    result = pairwise_accuracy(scores[:len(pairs)], scores[len(pairs):], [p.category for p in pairs])
    text = json.dumps(result, indent=2)
    if args.output:
        write_text_atomic(args.output, text + "\n")
    print(text)
    return 0
