"""Cold-start trajectory synthesis: code really runs in the sandbox; dense vs sparse; teacher errors."""

import pytest

from jaxalign import data
from jaxalign.data.problems import MathProblem
from jaxalign.data.synthesis import synthesize, synthesize_many
from jaxalign.tools import PythonSandbox


@pytest.fixture(scope="module")
def sandbox():
    with PythonSandbox(timeout_s=5) as sb:
        yield sb


@pytest.fixture(scope="module")
def problem():
    return MathProblem(id="p", question="Let a = 61 * 71. Let b = a * 82. Let c = b + a. What is c?",
                       answer="359473", source="toy",
                       meta={"steps": [{"var": "a", "expr": "61 * 71"}, {"var": "b", "expr": "a * 82"},
                                       {"var": "c", "expr": "b + a"}]})


def _calls(record):
    return [(c["arguments"]["code"], m_next["content"]) for m, m_next in zip(record["messages"], record["messages"][1:])
            for c in m.get("tool_calls") or []]


def test_dense_one_call_per_step_reading_earlier_results(sandbox, problem):
    r = synthesize(problem, sandbox, "dense", system_prompt="", narrate=False).to_dict()
    assert _calls(r) == [("a = 61 * 71\nprint(a)", "4331\n"), ("b = a * 82\nprint(b)", "355142\n"),
                         ("c = b + a\nprint(c)", "359473\n")]
    assert r["messages"][0] == {"role": "user", "content": problem.question}
    assert r["messages"][-1]["content"] == "The answer is \\boxed{359473}." and r["final_answer"] == "359473"


def test_dense_by_value_copies_printed_results(sandbox, problem):
    r = synthesize(problem, sandbox, "dense", system_prompt="S", narrate=True, reference="value").to_dict()
    assert [c for c, _ in _calls(r)] == ["a = 61 * 71\nprint(a)", "b = 4331 * 82\nprint(b)",
                                         "c = 355142 + 4331\nprint(c)"]
    assert r["messages"][0] == {"role": "system", "content": "S"}
    assert r["messages"][2]["content"].startswith("Step 1: a = 61 * 71")


def test_sparse_is_one_program(sandbox, problem):
    r = synthesize(problem, sandbox, "sparse", system_prompt="", narrate=False).to_dict()
    assert _calls(r) == [("a = 61 * 71\nb = a * 82\nc = b + a\nprint(c)", "359473\n")]


@pytest.mark.parametrize("style,calls", [("dense", 2), ("sparse", 1)])
def test_teacher_that_stops_early_boxes_an_intermediate_result(sandbox, problem, style, calls):
    r = synthesize(problem, sandbox, style, system_prompt="", narrate=False, stop_after=2).to_dict()
    assert len(_calls(r)) == calls and r["final_answer"] == "355142" != problem.answer
    assert r["meta"]["teacher_error"] == "stopped after 2 of 3 steps"
    assert _calls(r)[-1][1] == "355142\n"
    with pytest.raises(ValueError, match="stop_after must be in \\[1, 2\\]"):
        synthesize(problem, sandbox, style, stop_after=3)


def test_generated_problems_all_verify(sandbox):
    problems = data.ArithmeticTask(num_steps=2, digits=3, seed=5).generate(12)
    records = synthesize_many(problems, sandbox, "dense", system_prompt="")
    assert [r.final_answer for r in records] == [p.answer for p in problems]


def test_code_that_disagrees_with_the_solver_is_rejected(sandbox, problem):
    wrong = MathProblem(id="w", question=problem.question, answer="1", source="toy", meta=problem.meta)
    with pytest.raises(RuntimeError, match="solver says '1'"):
        synthesize(wrong, sandbox, "dense")
