"""`jaxalign sft CONFIG` and `jaxalign grpo CONFIG`: the trainers from YAML configs."""

from __future__ import annotations

import json


def register(sub) -> None:
    for name, helptext in (("sft", "cold-start SFT on tool-use trajectories"),
                           ("grpo", "GRPO with sandboxed multi-turn rollouts")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("config", help=f"YAML file mirroring the {name.upper()} config")
        p.add_argument("overrides", nargs="*", help="key.path=value overrides")
        p.add_argument("--no-resume", action="store_true", help="start over even if run_dir has checkpoints")
        p.add_argument("--allow-config-change", action="store_true",
                       help="resume although the config differs from the run's saved one (not exact)")
        p.set_defaults(func=run_sft if name == "sft" else run_grpo)


def run_sft(args) -> int:
    from jaxalign import config as cfg
    from jaxalign.sft.trainer import SFTConfig, train_sft

    summary = train_sft(cfg.load(SFTConfig, args.config, args.overrides), resume=not args.no_resume,
                        allow_config_change=args.allow_config_change)
    summary.pop("model", None)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def run_grpo(args) -> int:
    from jaxalign import config as cfg
    from jaxalign.rl.config import GRPOConfig
    from jaxalign.rl.trainer import GRPOTrainer

    trainer = GRPOTrainer(cfg.load(GRPOConfig, args.config, args.overrides))
    try:
        summary = trainer.run(resume=not args.no_resume, allow_config_change=args.allow_config_change)
        result = trainer.evaluate()
        print(json.dumps({"steps": summary["steps"], "eval": {k: v for k, v in result.items() if k != "problems"}},
                         indent=2))
    finally:
        trainer.close()
    return 0
