"""Small record factories shared by the data tests."""

from __future__ import annotations

from jaxalign.data import MathProblem, Message, PreferencePair, ToolCall, TrajectoryRecord


def trajectory_for(problem: MathProblem, record_id: str | None = None) -> TrajectoryRecord:
    """A programmatic solution of an ArithmeticTask problem: one code_interpreter call per step."""
    messages = [Message("system", "Use the code interpreter."), Message("user", problem.question)]
    for step in problem.meta["steps"]:
        code = f"{step['var']} = {step['expr']}\nprint({step['var']})"
        call = ToolCall("code_interpreter", {"code": code})
        messages.append(Message("assistant", f"Compute {step['var']}.", (call,)))
        messages.append(Message("tool", f"{step['value']}\n"))
    messages.append(Message("assistant", f"The answer is \\boxed{{{problem.answer}}}."))
    return TrajectoryRecord(id=record_id or problem.id, source=problem.source, messages=tuple(messages),
                            final_answer=problem.answer, meta={"problem_id": problem.id})


def trajectory_with_calls(record_id: str, calls: int) -> TrajectoryRecord:
    """A trajectory with exactly `calls` tool calls (content lengths are fixed: see test_stats)."""
    messages = [Message("user", "q" * 10)]
    for _ in range(calls):
        messages.append(Message("assistant", "a" * 4, (ToolCall("code_interpreter", {"code": "print(1)"}),)))
        messages.append(Message("tool", "1\n"))
    messages.append(Message("assistant", "done"))
    return TrajectoryRecord(id=record_id, source="test", messages=tuple(messages), final_answer="1")


def preference_pairs(problems: list[MathProblem]) -> list[PreferencePair]:
    """Pairs from worked solutions: chosen = the solution, rejected = the same with the answer changed."""
    pairs = []
    for i, p in enumerate(problems):
        wrong = str(int(p.answer) + 1)
        pairs.append(PreferencePair(id=f"pair-{p.id}", prompt=p.question, chosen=f"{p.solution}\nAnswer: {p.answer}",
                                    rejected=f"{p.solution}\nAnswer: {wrong}", category=["easy", "hard"][i % 2],
                                    meta={"wrong_answer": wrong}))
    return pairs
