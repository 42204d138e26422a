"""Evaluation of tool-integrated policies: avg@k, pass@k and tool-call statistics."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxalign.config import non_negative, positive, require
from jaxalign.data.problems import MathProblem
from jaxalign.rewards.verify import get_reward, last_boxed
from jaxalign.rollout.engine import RolloutEngine
from jaxalign.rollout.prompts import problem_prompt
from jaxalign.rollout.types import Trajectory
from jaxalign.runlog.console import Progress


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvalConfig:
    """How a policy is evaluated."""

    k: int = 4
    """Samples per problem (ASTER reports avg@16 at temperature 1.0)."""
    reward: str = "strict"
    """Answer check: "strict" (last \\boxed{} as a string), "math_verify", or a registered reward."""
    batch_size: int = 64
    """Trajectories rolled out together."""
    seed: int = 0
    """Sampling seed of the first batch (batch b uses seed + its first job index)."""
    temperature: float | None = None
    """Sampling temperature of evaluation (0: greedy); None: the rollout config's. Top-p and top-k stay
    the rollout's; the training engine is never changed (evaluation samples with a copy)."""

    def __post_init__(self):
        positive(self, "k", "batch_size")
        if self.temperature is not None:
            non_negative(self, "temperature")
        # The name is looked up when evaluation starts (`run_eval` checks it before loading a model):
        # user rewards may be registered after the config is built.
        require(self, "reward", bool(self.reward), "must name a reward")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al., 2021)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def sample_record(t: Trajectory, reward: float) -> dict[str, Any]:
    """The JSON row of one sample: its whole response text, reward and tool statistics."""
    return {"text": t.text, "answer": last_boxed(t.final_text or t.text), "reward": reward, "correct": reward > 0,
            "tool_calls": t.tool_calls, "tool_errors": t.tool_errors, "tool_timeouts": t.tool_timeouts,
            "finish": t.finish_reason, "tokens": len(t.tokens)}


def eval_engine(engine: RolloutEngine, config: EvalConfig) -> RolloutEngine:
    """The engine evaluation samples with: `engine` itself, or a copy at `config.temperature`."""
    sampling = engine.config.sampling
    if config.temperature is None or config.temperature == sampling.temperature:
        return engine
    rollout = dataclasses.replace(engine.config, sampling=dataclasses.replace(sampling,
                                                                              temperature=config.temperature))
    return engine.with_config(rollout)


def evaluate(engine: RolloutEngine, problems: Sequence[MathProblem], config: EvalConfig = EvalConfig(), *,
             system_prompt: str | None = None, progress: Progress | None = None) -> dict:
    """Rolls out k samples per problem at `config.temperature` (default: the engine's) and scores them.

    Returns {"avg@k", "pass@k", "pass@1", "temperature", "tool_calls_per_traj", ..., "problems": [per-problem
    rows]}; each problem row holds its k samples (`sample_record`: text, answer, reward, correct, tool calls,
    finish reason, tokens). `progress`, when given, advances by one per sample and shows the running accuracy.
    """
    from jaxalign.rollout.prompts import SYSTEM_PROMPT

    engine = eval_engine(engine, config)
    reward_fn = get_reward(config.reward)
    sp = SYSTEM_PROMPT if system_prompt is None else system_prompt
    jobs = [(i, j) for i in range(len(problems)) for j in range(config.k)]
    prompts = {i: problem_prompt(p.question, engine.tokenizer, sp) for i, p in enumerate(problems)}
    trajs: dict[tuple[int, int], Trajectory] = {}
    rewards = np.zeros((len(problems), config.k))
    solved = 0
    for start in range(0, len(jobs), config.batch_size):
        chunk = jobs[start:start + config.batch_size]
        out = engine.run([prompts[i] for i, _ in chunk], seed=config.seed + start)
        for (i, j), t in zip(chunk, out):
            trajs[(i, j)] = t
            # Scored as each batch arrives, so the progress bar can show the accuracy so far.
            rewards[i, j] = reward_fn(t.final_text or t.text, problems[i].answer)
            solved += bool(rewards[i, j] > 0)
        if progress is not None:
            progress.update(len(chunk), tokens=sum(len(t.tokens) for t in out), acc=solved / (start + len(chunk)))
    correct = rewards > 0
    rows = []
    for i, p in enumerate(problems):
        samples = [sample_record(trajs[(i, j)], float(rewards[i, j])) for j in range(config.k)]
        rows.append({"id": p.id, "question": p.question, "answer": p.answer, "accuracy": float(rewards[i].mean()),
                     "samples": samples})
    all_t = list(trajs.values())
    k = config.k
    return {
        "n_problems": len(problems), "k": k,
        f"avg@{k}": float(rewards.mean()),
        f"pass@{k}": float(correct.any(axis=1).mean()),
        "pass@1": float(np.mean([pass_at_k(k, int(c.sum()), 1) for c in correct])),
        "temperature": float(engine.config.sampling.temperature),
        "tool_calls_per_traj": float(np.mean([t.tool_calls for t in all_t])),
        "tool_errors_per_traj": float(np.mean([t.tool_errors for t in all_t])),
        "tool_timeouts_per_traj": float(np.mean([t.tool_timeouts for t in all_t])),
        "response_tokens": float(np.mean([len(t.tokens) for t in all_t])),
        "finish_reasons": dict(Counter(t.finish_reason for t in all_t)),
        "problems": rows,
    }


def format_table(results: dict[str, dict]) -> str:
    """A small text table: one row per evaluated set."""
    head = f"{'set':<16}{'n':>6}{'avg@k':>9}{'pass@k':>9}{'calls':>8}{'errors':>8}{'tokens':>8}"
    lines = [head, "-" * len(head)]
    for name, r in results.items():
        k = r["k"]
        lines.append(f"{name:<16}{r['n_problems']:>6}{r[f'avg@{k}']:>9.3f}{r[f'pass@{k}']:>9.3f}"
                     f"{r['tool_calls_per_traj']:>8.2f}{r['tool_errors_per_traj']:>8.2f}{r['response_tokens']:>8.0f}")
    return "\n".join(lines)
