"""`jaxalign demo [CONFIG] [key=value ...] [--ablation]`: the ASTER pipeline on the embedded default."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("demo", help="ASTER end to end on a CPU: data, tokenizer, SFT, GRPO, evaluation, report")
    p.add_argument("config", nargs="?", help="YAML mirroring DemoConfig (default: the embedded default)")
    p.add_argument("overrides", nargs="*", help="key.path=value overrides")
    p.add_argument("--ablation", action="store_true", help="also run the sparse cold start (dense vs sparse)")
    p.set_defaults(func=run)


def run(args) -> int:
    import dataclasses

    from jaxalign import config as cfg
    from jaxalign.demo import DemoConfig, run_demo

    path, overrides = args.config, list(args.overrides)
    if path is not None and "=" in path and not path.endswith((".yaml", ".yml")):
        path, overrides = None, [path, *overrides]  # `jaxalign demo key=value ...`: no config file given
    config = cfg.load(DemoConfig, path, overrides)
    if args.ablation:
        config = dataclasses.replace(config, ablation=True)
    summary = run_demo(config)
    print(json.dumps(summary, indent=2))
    print(f"\nreport: {config.run_dir}/report.md")
    for style, page in summary["viewer"].items():
        print(f"run viewer ({style} cold start): {page}   (open in a browser; `jaxalign view` rebuilds it)")
    return 0
