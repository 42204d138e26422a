import pytest

from jaxalign.data import MathProblem, read_jsonl, reasoning_gym_problems, reasoning_gym_score, write_jsonl
from jaxalign.data.arithmetic import evaluate_expr

TASKS = ["gsm_symbolic", "basic_arithmetic", "chain_sum", "simple_equations", "fraction_simplification"]


@pytest.mark.parametrize("task", TASKS)
def test_problems_are_deterministic_and_scored_by_the_task(task, tmp_path):
    problems = reasoning_gym_problems(task, 4, seed=5)
    assert problems == reasoning_gym_problems(task, 4, seed=5)
    assert problems != reasoning_gym_problems(task, 4, seed=6)
    assert [p.id for p in problems] == [f"rg-{task}-s5-{i:05d}" for i in range(4)]
    assert all(p.source == f"reasoning_gym/{task}" and p.meta["rg_task"] == task and p.answer for p in problems)
    # The scorer still works after the problems went through a file.
    write_jsonl(tmp_path / "rg.jsonl", problems)
    reread = read_jsonl(tmp_path / "rg.jsonl", "problems")
    assert reread == problems
    for problem in reread:
        assert reasoning_gym_score(problem, problem.answer) == 1.0
        assert reasoning_gym_score(problem, "no answer here") < 1.0


def test_config_kwargs_reach_the_generator_and_solutions_are_kept():
    problems = reasoning_gym_problems("chain_sum", 3, seed=0, min_terms=5, max_terms=5, min_digits=3, max_digits=3)
    for p in problems:
        assert p.meta["rg_config"] == {"min_terms": 5, "max_terms": 5, "min_digits": 3, "max_digits": 3}
        assert p.meta["rg_metadata"]["num_terms"] == 5
        assert str(evaluate_expr(p.meta["rg_metadata"]["expression"], {})) == p.answer
    gsm = reasoning_gym_problems("gsm_symbolic", 2, seed=0)
    assert all(p.solution and p.solution.strip().endswith(f"#### {p.answer}") for p in gsm)


def test_errors_are_clear():
    with pytest.raises(ValueError, match="unknown reasoning-gym task 'fractions'; available: .*'fraction_simp"):
        reasoning_gym_problems("fractions", 2)
    plain = MathProblem(id="x", question="q", answer="1", source="s")
    with pytest.raises(ValueError, match="not from reasoning_gym_problems: meta lacks 'rg_task'"):
        reasoning_gym_score(plain, "1")
