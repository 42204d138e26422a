"""`jaxalign rm train|eval`: Bradley-Terry reward models (sentence-level or response-level)."""

from __future__ import annotations

import json

from jaxalign.cli.args import non_negative_int
from jaxalign.runlog.files import check_output, write_text_atomic


def register(sub) -> None:
    p = sub.add_parser("rm", help="train / evaluate a sentence-level or response-level reward model")
    rm_sub = p.add_subparsers(dest="rm_command", required=True, metavar="ACTION")
    t = rm_sub.add_parser("train", help="Bradley-Terry training on preference pairs, then test-split evaluation")
    t.add_argument("config", help="YAML file mirroring RMConfig (configs/rm/)")
    t.add_argument("overrides", nargs="*", help="key.path=value overrides")
    t.add_argument("--kind", choices=("sentence", "response"), help="override the config's model kind")
    t.add_argument("--no-resume", action="store_true", help="start over even if run_dir has checkpoints")
    t.add_argument("--allow-config-change", action="store_true",
                   help="resume although the config differs from the run's saved one (not exact)")
    t.set_defaults(func=run_train)
    e = rm_sub.add_parser("eval", help="pairwise accuracy (and localisation) of a trained reward model")
    e.add_argument("run_dir", help="run directory written by `jaxalign rm train`")
    e.add_argument("--pairs", default="", help="preference JSONL (default: the run's test pairs)")
    e.add_argument("--max-pairs", type=non_negative_int, default=0,
                   help="evaluate a seeded subset of this many pairs (0: all)")
    e.add_argument("-o", "--output", default="", help="write the result as JSON here")
    e.set_defaults(func=run_eval)


def run_train(args) -> int:
    from jaxalign import config as cfg
    from jaxalign.rm.trainer import RMConfig, train_rm

    overrides = list(args.overrides) + ([f"kind={args.kind}"] if args.kind else [])
    summary = train_rm(cfg.load(RMConfig, args.config, overrides), resume=not args.no_resume,
                       allow_config_change=args.allow_config_change)
    summary.pop("model", None)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def run_eval(args) -> int:
    from jaxalign.data import read_jsonl
    from jaxalign.rm.trainer import _subset, evaluate_model, load_pairs, load_trained

    if args.output:
        check_output(args.output, "--output")
    config, rm, tok, end_id = load_trained(args.run_dir)
    pairs = read_jsonl(args.pairs, "preferences") if args.pairs else load_pairs(config.data, config.run.seed)[1]
    pairs = _subset(list(pairs), args.max_pairs, config.run.seed + 1)
    result = evaluate_model(config, rm, tok, end_id, pairs)
    result.pop("scores")
    text = json.dumps(result, indent=2)
    if args.output:
        write_text_atomic(args.output, text + "\n")
    print(text)
    return 0
