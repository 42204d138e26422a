"""`jaxalign eval CONFIG [key=value ...]`: avg@k / pass@k and tool statistics on problem sets."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a policy (avg@k, pass@k, tool calls) on GSM8K, AIME 2025, ...")
    p.add_argument("config", help="YAML mirroring jaxalign.eval.run.EvalRunConfig")
    p.add_argument("overrides", nargs="*", help="key.path=value overrides (e.g. eval.k=16 output=out.json)")
    p.add_argument("--json", action="store_true", help="print the full JSON instead of the table")
    p.set_defaults(func=run)


def run(args) -> int:
    from jaxalign import config as cfg
    from jaxalign.eval.run import EvalRunConfig, run_eval, table

    config = cfg.load(EvalRunConfig, args.config, args.overrides)
    summary = run_eval(config)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(table(summary))
        print(f"sandbox: {summary['sandbox']}")
        if config.output:
            print(f"results: {config.output}")
    return 0
