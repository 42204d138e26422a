"""`jaxalign demo`: the ASTER pipeline end to end on the embedded default (CPU, minutes).

tool-requiring task -> dense trajectories run in the real sandbox -> a SentencePiece tokenizer and
a tiny policy trained from scratch by cold-start SFT -> GRPO with real sandboxed multi-turn
rollouts -> held-out evaluation before and after RL -> report, summary, plots.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import time

from jaxalign import data, sharding, tokenizer
from jaxalign.data.synthesis import synthesize
from jaxalign.data.tasks import TaskConfig
from jaxalign.demo.config import DemoConfig
from jaxalign.demo.report import write_report
from jaxalign.eval.evaluate import EvalConfig
from jaxalign.rl.config import GRPOConfig
from jaxalign.rl.step import GRPOLossConfig
from jaxalign.rl.trainer import GRPOTrainer
from jaxalign.rollout.types import RolloutConfig
from jaxalign.sampling.functional import SamplingConfig
from jaxalign.sft.trainer import SFTConfig, SFTDataConfig, train_sft
from jaxalign.tools import PythonSandbox
from jaxalign.train.config import RunConfig
from jaxalign.train.optim import OptimConfig

log = logging.getLogger(__name__)
ONE_DEVICE = sharding.MeshConfig(data=1, fsdp=1, tensor=1)


def _task(cfg: DemoConfig) -> TaskConfig:
    return TaskConfig(source="arithmetic", num_train=cfg.rl_problems, num_eval=cfg.eval_problems, seed=cfg.seed,
                      num_steps=cfg.num_steps, digits=cfg.digits)


def build_data(cfg: DemoConfig, styles: tuple[str, ...]) -> dict[str, str]:
    """Synthesises cold-start trajectories (disjoint from RL and held-out problems) per style."""
    held = {p.question for p in data.ArithmeticTask(num_steps=cfg.num_steps, digits=cfg.digits, seed=cfg.seed)
            .generate(cfg.rl_problems + cfg.eval_problems)}
    task = data.ArithmeticTask(num_steps=cfg.num_steps, digits=cfg.digits, seed=cfg.seed + 1)
    problems = [p for p in task.generate(cfg.sft_problems) if p.question not in held]
    # the same problems get the same teacher error in every style: it stops one or more steps early
    rng = random.Random(cfg.seed)
    stops = [rng.randint(1, cfg.num_steps - 1) if cfg.num_steps > 1 and rng.random() < cfg.teacher_error_rate
             else None for _ in problems]
    paths = {}
    with PythonSandbox() as sandbox:
        log.info("synthesising %d trajectories per style in the %s sandbox (%d with a teacher error)",
                 len(problems), sandbox.backend, sum(s is not None for s in stops))
        for style in styles:
            records = [synthesize(p, sandbox, style, system_prompt=cfg.system_prompt, narrate=cfg.narrate,
                                  stop_after=stop) for p, stop in zip(problems, stops)]
            paths[style] = os.path.join(cfg.run_dir, "data", f"{style}.jsonl")
            os.makedirs(os.path.dirname(paths[style]), exist_ok=True)
            data.write_jsonl(paths[style], records)
    return paths


def build_tokenizer(cfg: DemoConfig, paths: dict[str, str]):
    """Trains the SentencePiece tokenizer on the rendered text of every trajectory."""
    from jaxalign.rollout.formats import get_format

    fmt = get_format("markdown")
    texts = []
    for path in paths.values():
        for r in data.read_jsonl(path, "trajectories"):
            for m in r.to_dict()["messages"]:
                texts.append(m["content"])
                texts += [fmt.render_call(c["arguments"]["code"]) for c in m.get("tool_calls", [])]
                if m["role"] == "tool":
                    texts.append(fmt.render_output(m["content"], None, ""))
    return tokenizer.train_sentencepiece(texts, os.path.join(cfg.run_dir, "tokenizer"), vocab_size=cfg.vocab_size,
                                         split_digits=cfg.split_digits)


def cold_start(cfg: DemoConfig, style: str, path: str, tok) -> dict:
    """SFT of a tiny model from scratch on one style of trajectories."""
    model_cfg = dataclasses.replace(cfg.model, vocab_size=len(tok))
    sft = SFTConfig(init=model_cfg, tokenizer=os.path.join(cfg.run_dir, "tokenizer"),
                    data=SFTDataConfig(trajectories=path, seq_len=cfg.sft_seq_len),
                    optim=OptimConfig(learning_rate=cfg.sft_lr, warmup_fraction=0.06, weight_decay=0.0),
                    batch_size=cfg.sft_batch_size, epochs=cfg.sft_epochs,
                    run=RunConfig(run_dir=os.path.join(cfg.run_dir, f"sft-{style}"), seed=cfg.seed, save_every=10_000,
                                  log_every=20, mesh=ONE_DEVICE))
    summary = train_sft(sft, resume=False)
    summary.pop("model")
    return summary


def eval_config(cfg: DemoConfig) -> EvalConfig:
    """Every evaluation of the demo: avg@`eval_k` at `eval_temperature`, the protocol its report states."""
    return EvalConfig(k=cfg.eval_k, batch_size=128, seed=cfg.seed + 7, temperature=cfg.eval_temperature)


def reinforce(cfg: DemoConfig, style: str, sft_dir: str) -> dict:
    """Held-out eval of the cold-start policy, GRPO with sandboxed rollouts, eval again."""
    grpo = GRPOConfig(
        model=sft_dir, task=_task(cfg), prompts_per_step=cfg.rl_prompts_per_step, group_size=cfg.rl_group_size,
        mini_batches=2, steps=cfg.rl_steps, system_prompt=cfg.system_prompt, max_refill_rounds=cfg.rl_refill_rounds,
        rollout=RolloutConfig(max_response_tokens=cfg.rl_max_response_tokens, max_tool_calls=cfg.rl_max_tool_calls,
                              max_tool_output_tokens=48, steps_per_call=32,
                              sampling=SamplingConfig(temperature=cfg.rl_temperature)),
        loss=GRPOLossConfig(), optim=OptimConfig(learning_rate=cfg.rl_lr, warmup_fraction=0.0, schedule="constant",
                                                 weight_decay=0.0),
        eval=eval_config(cfg), save_trajectories_every=5,
        run=RunConfig(run_dir=os.path.join(cfg.run_dir, f"grpo-{style}"), seed=cfg.seed,
                      save_every=max(cfg.rl_steps, 1), log_every=1, keep_checkpoints=2, mesh=ONE_DEVICE))
    trainer = GRPOTrainer(grpo)
    try:
        before = trainer.evaluate()
        history = trainer.run(resume=False)["history"]
        after = trainer.evaluate()
    finally:
        trainer.close()
    for name, result in (("eval_before", before), ("eval_after", after)):
        with open(os.path.join(grpo.run.run_dir, f"{name}.json"), "w") as f:
            json.dump(result, f, indent=2)
    return {"before": before, "after": after, "history": history, "run_dir": grpo.run.run_dir}


def run_demo(cfg: DemoConfig = DemoConfig()) -> dict:
    """Runs the whole pipeline; returns the summary also written to run_dir/summary.json."""
    t0 = time.perf_counter()
    os.makedirs(cfg.run_dir, exist_ok=True)
    styles = ("dense", "sparse") if cfg.ablation else (cfg.cold_start,)
    paths = build_data(cfg, styles)
    tok = build_tokenizer(cfg, paths)
    arms = {}
    for style in styles:
        sft = cold_start(cfg, style, paths[style], tok)
        rl = reinforce(cfg, style, sft["hf_dir"])
        arms[style] = {"sft": sft, **rl}
    main = arms[cfg.cold_start]
    k = cfg.eval_k
    summary = {
        "task": f"arithmetic: {cfg.num_steps} steps, {cfg.digits}-digit literals",
        "cold_start": cfg.cold_start,
        "eval_protocol": f"avg@{k} at temperature {main['before']['temperature']} on {cfg.eval_problems} "
                         "held-out problems",  # as evaluated
        "sft_accuracy": main["before"][f"avg@{k}"],
        "rl_accuracy": main["after"][f"avg@{k}"],
        "sft_pass_at_k": main["before"][f"pass@{k}"],
        "rl_pass_at_k": main["after"][f"pass@{k}"],
        "tool_calls_per_traj": {"before": main["before"]["tool_calls_per_traj"],
                                "after": main["after"]["tool_calls_per_traj"]},
        "sft_final_loss": main["sft"]["final_loss"],
        "rl_steps": cfg.rl_steps,
        "minutes": (time.perf_counter() - t0) / 60,
    }
    if cfg.ablation:
        summary["ablation"] = {s: {"sft_accuracy": a["before"][f"avg@{k}"], "rl_accuracy": a["after"][f"avg@{k}"],
                                   "tool_calls_before": a["before"]["tool_calls_per_traj"],
                                   "tool_calls_after": a["after"]["tool_calls_per_traj"]} for s, a in arms.items()}
    from jaxalign.viewer import write_report as write_run_page

    summary["viewer"] = {style: write_run_page(a["run_dir"], os.path.join(cfg.run_dir, f"view_{style}.html"))
                         for style, a in arms.items()}
    with open(os.path.join(cfg.run_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    write_report(cfg, summary, arms)
    return summary
