"""The demo's human-facing output: report.md with tables, plots and an example trajectory."""

from __future__ import annotations

import json
import os

from jaxalign.demo.config import DemoConfig


def _plots(cfg: DemoConfig, arms: dict) -> list[str]:
    from jaxalign.runlog import plot_metrics, read_metrics

    out = []
    for style, arm in arms.items():
        rl = arm["run_dir"]
        logged = {k for row in read_metrics(rl) for k in row}
        # entropy exists only for steps that trained (a step whose groups all tie has no update)
        keys = [k for k in ("train/reward", "train/tool_calls_per_traj", "train/response_tokens", "train/entropy")
                if k in logged]
        path = plot_metrics(rl, keys, os.path.join(cfg.run_dir, f"rl_{style}.png"),
                            title=f"GRPO ({style} cold start): reward and tool calls per step")
        out.append(path)
        sft_dir = arm["sft"]["run_dir"]
        out.append(plot_metrics(sft_dir, ["train/loss"], os.path.join(cfg.run_dir, f"sft_{style}.png"),
                                title=f"cold-start SFT ({style}): loss"))
    return out


def _example(arm: dict) -> str:
    rows = [p for p in arm["after"]["problems"] if any(s["correct"] for s in p["samples"])]
    traj_dir = os.path.join(arm["run_dir"], "trajectories")
    files = sorted(os.listdir(traj_dir)) if os.path.isdir(traj_dir) else []
    if not files:
        return "(no trajectories saved)"
    with open(os.path.join(traj_dir, files[-1])) as f:
        trajs = [json.loads(line) for line in f]
    best = max(trajs, key=lambda t: (t["advantage"], t["tool_calls"]))
    text = best["prompt"] + best["text"]
    return f"A training rollout from the last saved step (advantage {best['advantage']:+.2f}, " \
           f"{best['tool_calls']} tool calls; {len(rows)} held-out problems solved at least once):\n\n" \
           f"```text\n{text}\n```"


def write_report(cfg: DemoConfig, summary: dict, arms: dict) -> str:
    """Writes run_dir/report.md (and the PNG plots it links); returns its path."""
    plots = _plots(cfg, arms)
    k = cfg.eval_k
    lines = [
        "# jaxalign demo: ASTER on a tool-requiring task (CPU)", "",
        f"Task: {summary['task']}; the policy is a {cfg.model.num_layers}-layer, d={cfg.model.hidden_size} "
        f"transformer trained from scratch with a {cfg.vocab_size}-piece SentencePiece tokenizer. "
        f"Evaluation: {summary['eval_protocol']}; every tool call ran in the sandbox.", "",
        "| stage | avg@k | pass@k | tool calls / trajectory | tool errors / traj. | response tokens |",
        "|---|---|---|---|---|---|",
    ]
    for style, arm in arms.items():
        for label, r in ((f"cold start ({style})", arm["before"]), (f"+ GRPO ({cfg.rl_steps} steps)", arm["after"])):
            lines.append(f"| {label} | {r[f'avg@{k}']:.3f} | {r[f'pass@{k}']:.3f} | {r['tool_calls_per_traj']:.2f} | "
                         f"{r['tool_errors_per_traj']:.2f} | {r['response_tokens']:.0f} |")
    delta = summary["rl_accuracy"] - summary["sft_accuracy"]
    lines += ["", f"RL changed held-out avg@{k} by {delta:+.3f} ({summary['sft_accuracy']:.3f} -> "
                  f"{summary['rl_accuracy']:.3f}). Wall time: {summary['minutes']:.1f} minutes.", ""]
    if cfg.ablation:
        lines += ["## Ablation: dense vs sparse cold start (same RL)", "",
                  "Dense trajectories make one tool call per step and read earlier printed results; sparse ones "
                  "solve everything in one call. ASTER reports that the interaction-dense cold start is the better "
                  "prior for RL even when its immediate accuracy is lower. Our toy numbers, whatever they show:", "",
                  "| cold start | SFT avg@k | after RL | tool calls before | after |", "|---|---|---|---|---|"]
        for style, a in summary["ablation"].items():
            lines.append(f"| {style} | {a['sft_accuracy']:.3f} | {a['rl_accuracy']:.3f} | {a['tool_calls_before']:.2f}"
                         f" | {a['tool_calls_after']:.2f} |")
        lines.append("")
    lines += ["## Plots", ""] + [f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in plots]
    lines += ["", "## Example", "", _example(arms[cfg.cold_start]), "",
              "Run viewer (curves, every saved trajectory turn by turn, loss masks): "
              + ", ".join(f"[{os.path.basename(p)}]({os.path.basename(p)})" for p in summary.get("viewer", {}).values())
              + ".", "",
              "Metrics: `*/metrics.jsonl` (and TensorBoard under `*/tb/`); held-out details: "
              "`grpo-*/eval_before.json`, `grpo-*/eval_after.json`; summary: `summary.json`."]
    path = os.path.join(cfg.run_dir, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path
