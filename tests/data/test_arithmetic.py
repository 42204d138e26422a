import re

import pytest

from jaxalign.data import ArithmeticTask, solve_steps
from jaxalign.data.arithmetic import MAX_VALUE, evaluate_expr


def test_generation_is_deterministic_with_unique_ids_and_prefix_stable():
    task = ArithmeticTask(num_steps=4, digits=5, seed=7)
    problems = task.generate(40)
    assert problems == ArithmeticTask(num_steps=4, digits=5, seed=7).generate(40)
    assert len({p.id for p in problems}) == 40
    assert task.generate(10) == problems[:10]
    assert task.generate(5, start=30) == problems[30:35]
    other = ArithmeticTask(num_steps=4, digits=5, seed=8).generate(40)
    assert {p.question for p in other}.isdisjoint({p.question for p in problems})
    assert {p.id for p in other}.isdisjoint({p.id for p in problems})


@pytest.mark.parametrize("num_steps,digits", [(1, 5), (3, 5), (6, 3), (12, 9), (40, 1)])
def test_steps_are_valid_and_solve_to_the_answer(num_steps, digits):
    for problem in ArithmeticTask(num_steps=num_steps, digits=digits, seed=1).generate(60):
        steps = problem.meta["steps"]
        assert len(steps) == num_steps
        assert problem.answer == str(steps[-1]["value"]) == str(solve_steps(steps))
        env = {}
        for i, step in enumerate(steps):
            assert evaluate_expr(step["expr"], env) == step["value"]
            assert 0 < step["value"] < MAX_VALUE < 2**63 - 1
            left, op, right = step["expr"].split(" ")
            assert op in {"+", "-", "*", "//", "%"}
            if i == 0:
                assert op == "*" and len(left) == len(right) == digits
            else:
                assert left == steps[i - 1]["var"]  # every step builds on the previous result
                assert right in env or (right.isdigit() and len(right) == digits)
            if op in ("//", "%"):
                divisor = env[right] if right in env else int(right)
                assert 1 < divisor < env[left]
            env[step["var"]] = step["value"]
            assert f"Let {step['var']} = {step['expr']}." in problem.question
        assert problem.question.rstrip(" .)").split("What is ")[1].startswith(steps[-1]["var"] + "?")
        assert problem.solution.endswith(f"#### {problem.answer}")


def test_operations_are_mixed_and_older_variables_are_used():
    problems = ArithmeticTask(num_steps=6, seed=2).generate(200)
    ops = [s["expr"].split(" ")[1] for p in problems for s in p.meta["steps"][1:]]
    assert set(ops) == {"+", "-", "*", "//", "%"}
    older = [s for p in problems for s in p.meta["steps"][2:] if re.fullmatch(r"[a-z]", s["expr"].split(" ")[2])]
    assert older, "no step reads an older variable"


def test_parameters_are_validated():
    with pytest.raises(ValueError, match="num_steps"):
        ArithmeticTask(num_steps=0)
    with pytest.raises(ValueError, match="digits"):
        ArithmeticTask(digits=10)
    with pytest.raises(ValueError, match="n and start"):
        ArithmeticTask().generate(-1)


def test_evaluator_is_arithmetic_only():
    assert evaluate_expr("(7 - 10) // 2 + -3 % 5", {}) == (7 - 10) // 2 + -3 % 5
    assert evaluate_expr("a * b", {"a": 123456789, "b": 987654321}) == 123456789 * 987654321
    for bad in ["__import__('os').system('true')", "2 ** 10", "a.real", "1 / 2", "[1][0]", "1.5 + 1", "True + 1"]:
        with pytest.raises(ValueError):
            evaluate_expr(bad, {"a": 1})
    with pytest.raises(ValueError, match="division by zero"):
        evaluate_expr("a % 0", {"a": 5})
    with pytest.raises(ValueError, match="unknown name 'b'"):
        evaluate_expr("a + b", {"a": 1})


def test_solve_steps_checks_the_chain_independently():
    steps = [{"var": "a", "expr": "48213 * 9127", "value": 0}, {"var": "b", "expr": "a % 9973", "value": 0}]
    assert solve_steps(steps) == 48213 * 9127 % 9973  # recorded values are ignored
    with pytest.raises(ValueError, match="unknown name 'c'"):
        solve_steps([{"var": "a", "expr": "c + 1"}])
    with pytest.raises(ValueError, match="new identifier"):
        solve_steps([{"var": "a", "expr": "1"}, {"var": "a", "expr": "a + 1"}])
