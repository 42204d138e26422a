"""Synthesising tool-use trajectories for tasks with a programmatic solver (ASTER cold start).

* dense: one tool call per step. With `reference="variable"` a later step's code names the earlier
  results (the session is stateful, like a notebook) and only the final answer is copied from a
  printed output; with `reference="value"` each later step copies the *printed* results as
  literals, so the policy must read every tool output to go on (harder for a tiny model).
* sparse: a single call that computes everything at once.

The code is really executed in the sandbox (one stateful session per trajectory) and the tool
messages hold what it printed; a trajectory whose output disagrees with the solver is rejected.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

from jaxalign.data.problems import MathProblem
from jaxalign.data.records import TrajectoryRecord

SYSTEM_PROMPT = ("Solve the problem with Python. Write code in ```python blocks; each result comes back in an "
                 "```output block. Give the final answer as \\boxed{N}.")


def _substitute(expr: str, printed: dict[str, str]) -> str:
    """`expr` with earlier variables replaced by the values the tool printed for them."""
    return re.sub(r"\b([a-z]\w*)\b", lambda m: printed.get(m.group(1), m.group(1)), expr)


def plan_calls(problem: MathProblem, style: Literal["dense", "sparse"],
               stop_after: int | None = None) -> list[tuple[str, str]]:
    """(assistant text, code) per tool call, before execution (dense code is filled in as we go);
    `stop_after` keeps only the first steps (a teacher that stops early)."""
    steps = problem.meta["steps"][:stop_after]
    if style == "sparse":
        code = "\n".join(f"{s['var']} = {s['expr']}" for s in steps) + f"\nprint({steps[-1]['var']})"
        return [("I will compute all the steps in one program.", code)]
    return [(f"Step {i + 1}: {s['var']} = {s['expr']}.", s["expr"]) for i, s in enumerate(steps)]


def synthesize(problem: MathProblem, sandbox, style: Literal["dense", "sparse"] = "dense", *,
               system_prompt: str = SYSTEM_PROMPT, reference: Literal["variable", "value"] = "variable",
               narrate: bool = True, stop_after: int | None = None) -> TrajectoryRecord:
    """Builds one trajectory for an arithmetic problem (`meta["steps"]`), running its code for real.

    `narrate` writes a short sentence before each call ("Step 1: a = 48 * 17."); without it the
    assistant turn is code, outputs and the boxed answer only. `stop_after=k` (k < steps) imitates
    a realistic teacher error: the solution stops after k steps and boxes that intermediate result
    (wrong; `meta["teacher_error"]` records it), the kind of flaw RL with a verifier must unlearn.
    """
    n_steps = len(problem.meta.get("steps", ()))
    if stop_after is not None and not 1 <= stop_after < n_steps:
        raise ValueError(f"problem {problem.id!r}: stop_after must be in [1, {n_steps - 1}], got {stop_after}")
    if "steps" not in problem.meta:
        raise ValueError(f"problem {problem.id!r} has no meta['steps'] to synthesise from")
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": problem.question})
    printed: dict[str, str] = {}
    last = ""
    with sandbox.session() as session:
        for (text, code), step in zip(plan_calls(problem, style, stop_after), problem.meta["steps"]):
            if style == "dense":
                expr = _substitute(code, printed) if reference == "value" else code
                code = f"{step['var']} = {expr}\nprint({step['var']})"
            result = session.run(code)
            if not result.ok:
                raise RuntimeError(f"problem {problem.id!r}: synthesised code failed: {result.error}\n{code}")
            last = result.stdout.strip()
            printed[step["var"]] = last
            messages.append({"role": "assistant", "content": text if narrate else "",
                             "tool_calls": [{"name": "code_interpreter", "arguments": {"code": code}}]})
            messages.append({"role": "tool", "content": result.stdout})
    if stop_after is None and last != problem.answer:
        raise RuntimeError(f"problem {problem.id!r}: sandbox printed {last!r}, solver says {problem.answer!r}")
    messages.append({"role": "assistant", "content": f"The answer is \\boxed{{{last}}}."})
    meta = {"teacher_error": f"stopped after {stop_after} of {n_steps} steps"} if stop_after is not None else {}
    return TrajectoryRecord.from_dict({"id": f"{problem.id}-{style}", "source": f"synthetic-{style}",
                                       "messages": messages, "final_answer": last, "meta": meta})


def synthesize_many(problems: Sequence[MathProblem], sandbox, style: Literal["dense", "sparse"] = "dense",
                    **kwargs) -> list[TrajectoryRecord]:
    """`synthesize` for each problem (sessions run one after another; each call is milliseconds)."""
    return [synthesize(p, sandbox, style, **kwargs) for p in problems]
