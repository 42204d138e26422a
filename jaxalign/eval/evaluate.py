"""Evaluation of tool-integrated policies: avg@k, pass@k and tool-call statistics."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from jaxalign.data.problems import MathProblem
from jaxalign.rewards.verify import get_reward, last_boxed
from jaxalign.rollout.engine import RolloutEngine
from jaxalign.rollout.prompts import problem_prompt
from jaxalign.rollout.types import Trajectory


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvalConfig:
    """How a policy is evaluated."""

    k: int = 4
    """Samples per problem (ASTER reports avg@16 at temperature 1.0)."""
    reward: str = "strict"
    """Answer check: "strict" (last \\boxed{} as a string) or "math_verify"."""
    batch_size: int = 64
    """Trajectories rolled out together."""
    seed: int = 0


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al., 2021)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def evaluate(engine: RolloutEngine, problems: Sequence[MathProblem], config: EvalConfig = EvalConfig(), *,
             system_prompt: str | None = None) -> dict:
    """Rolls out k samples per problem and scores them.

    Returns {"avg@k", "pass@k", "pass@1", "tool_calls_per_traj", ..., "problems": [per-problem rows]}.
    """
    from jaxalign.rollout.prompts import SYSTEM_PROMPT

    reward_fn = get_reward(config.reward)
    sp = SYSTEM_PROMPT if system_prompt is None else system_prompt
    jobs = [(i, j) for i in range(len(problems)) for j in range(config.k)]
    prompts = {i: problem_prompt(p.question, engine.tokenizer, sp) for i, p in enumerate(problems)}
    trajs: dict[tuple[int, int], Trajectory] = {}
    for start in range(0, len(jobs), config.batch_size):
        chunk = jobs[start:start + config.batch_size]
        out = engine.run([prompts[i] for i, _ in chunk], seed=config.seed + start)
        trajs.update(zip(chunk, out))
    correct = np.zeros((len(problems), config.k))
    rows = []
    for i, p in enumerate(problems):
        samples = []
        for j in range(config.k):
            t = trajs[(i, j)]
            correct[i, j] = reward_fn(t.final_text or t.text, p.answer)
            samples.append({"answer": last_boxed(t.final_text or t.text), "correct": bool(correct[i, j]),
                            "tool_calls": t.tool_calls, "finish": t.finish_reason, "tokens": len(t.tokens)})
        rows.append({"id": p.id, "answer": p.answer, "accuracy": float(correct[i].mean()), "samples": samples})
    all_t = list(trajs.values())
    k = config.k
    return {
        "n_problems": len(problems), "k": k,
        f"avg@{k}": float(correct.mean()),
        f"pass@{k}": float((correct.max(axis=1) > 0).mean()),
        "pass@1": float(np.mean([pass_at_k(k, int(c.sum()), 1) for c in correct])),
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
