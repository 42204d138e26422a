"""`jaxalign data ...`: statistics, selection by interaction density, and trajectory synthesis."""

from __future__ import annotations

import json

from jaxalign.cli.args import non_negative_int, positive_int


def register(sub) -> None:
    p = sub.add_parser("data", help="trajectory data tools")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    s = dsub.add_parser("stats", help="count, tool calls per trajectory (histogram), tokens")
    s.add_argument("path", help="trajectories JSONL")
    s.add_argument("--tokenizer", default="", help="count tokens with this tokenizer")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=run_stats)
    sel = dsub.add_parser("select", help="keep interaction-dense trajectories")
    sel.add_argument("path")
    sel.add_argument("out")
    sel.add_argument("--min-tool-calls", type=non_negative_int, default=0)
    sel.add_argument("--top-k", type=positive_int, default=None, help="then keep the k densest")
    sel.set_defaults(func=run_select)
    syn = dsub.add_parser("synth", help="synthesise dense or sparse trajectories for the arithmetic task")
    syn.add_argument("out")
    syn.add_argument("--n", type=positive_int, default=100, help="problems (trajectories) to synthesise")
    syn.add_argument("--style", choices=["dense", "sparse"], default="dense")
    syn.add_argument("--num-steps", type=positive_int, default=3)
    syn.add_argument("--digits", type=positive_int, default=4)
    syn.add_argument("--seed", type=int, default=0)
    syn.set_defaults(func=run_synth)


def run_stats(args) -> int:
    from jaxalign import data, tokenizer

    records = data.read_jsonl(args.path, "trajectories")
    stats = data.trajectory_stats(records, tokenizer=tokenizer.load(args.tokenizer) if args.tokenizer else None)
    print(json.dumps(stats, indent=2) if args.json else data.format_stats(stats))
    return 0


def run_select(args) -> int:
    from jaxalign import data

    records = data.read_jsonl(args.path, "trajectories")
    chosen = data.select_by_density(records, min_tool_calls=args.min_tool_calls, top_k=args.top_k)
    data.write_jsonl(args.out, chosen)
    print(f"kept {len(chosen)} of {len(records)} trajectories -> {args.out}")
    return 0


def run_synth(args) -> int:
    from jaxalign import data
    from jaxalign.data.synthesis import synthesize_many
    from jaxalign.tools import PythonSandbox

    problems = data.ArithmeticTask(num_steps=args.num_steps, digits=args.digits, seed=args.seed).generate(args.n)
    with PythonSandbox() as sandbox:
        records = synthesize_many(problems, sandbox, args.style)
    data.write_jsonl(args.out, records)
    print(f"wrote {len(records)} {args.style} trajectories ({sandbox.backend} sandbox) -> {args.out}")
    return 0
