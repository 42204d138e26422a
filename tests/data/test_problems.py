import json
import os
import re

import pytest

from jaxalign.data import DataError, MathProblem, load_aime2025, load_gsm8k, split_problems
from jaxalign.data.problems import bench_data_dir


def test_gsm8k_answers_come_from_the_final_line():
    problems = load_gsm8k()
    assert len(problems) == 1319
    assert len({p.id for p in problems}) == 1319
    first = problems[0]
    assert first.id == "gsm8k-test-0000" and first.source == "gsm8k"
    assert first.question.startswith("Janet’s ducks lay 16 eggs per day.")
    assert first.answer == "18"
    assert first.solution.endswith("$<<9*2=18>>18 every day at the farmer’s market.")
    with open(os.path.join(bench_data_dir(), "gsm8k", "test.jsonl"), encoding="utf-8") as f:
        raw = [json.loads(line) for line in f]
    for problem, row in zip(problems, raw):
        assert "####" not in problem.solution
        assert re.fullmatch(r"-?\d+", problem.answer), problem.answer
        assert row["answer"].rsplit("####", 1)[1].strip().replace(",", "") == problem.answer
    # Thousands separators are removed: the source has answers written like "1,000".
    assert any("," in row["answer"].rsplit("####", 1)[1] for row in raw)


def test_gsm8k_strip_calculator_and_missing_split():
    stripped = load_gsm8k(strip_calculator=True)[0]
    assert "<<" not in stripped.solution and "Janet sells 16 - 3 - 4 = 9 duck eggs a day." in stripped.solution
    with pytest.raises(FileNotFoundError, match="split 'train' is not in the package; available: \\['test'\\]"):
        load_gsm8k("train")


def test_aime2025():
    problems = load_aime2025()
    assert len(problems) == 30
    assert [p.id for p in problems[:2]] == ["aime2025-I-01", "aime2025-I-02"]
    assert problems[-1].id == "aime2025-II-15"
    assert problems[0].answer == "70" and problems[1].answer == "588"
    assert all(re.fullmatch(r"\d{1,3}", p.answer) for p in problems)
    degree = [p for p in problems if p.meta["raw_answer"] != p.answer]
    assert [(p.answer, p.meta["raw_answer"]) for p in degree] == [("336", "336^\\circ")]


def _problems(n):
    return [MathProblem(id=f"p{i}", question=f"q{i}", answer=str(i), source="t") for i in range(n)]


def test_split_problems_is_deterministic_exact_and_order_independent():
    problems = _problems(50)
    train, test = split_problems(problems, 0.2, seed=3)
    assert len(test) == 10 and len(train) == 40
    assert {p.id for p in train}.isdisjoint({p.id for p in test})
    assert {p.id for p in train} | {p.id for p in test} == {p.id for p in problems}
    # Each side keeps the input order.
    assert [p.id for p in train] == [p.id for p in problems if p in train]
    again = split_problems(problems, 0.2, seed=3)
    assert again == (train, test)
    reversed_test = split_problems(problems[::-1], 0.2, seed=3)[1]
    assert {p.id for p in reversed_test} == {p.id for p in test}
    other_seed = split_problems(problems, 0.2, seed=4)[1]
    assert {p.id for p in other_seed} != {p.id for p in test}
    assert split_problems(problems, 0.0)[1] == [] and split_problems(problems, 1.0)[0] == []


def test_split_problems_rejects_bad_input():
    with pytest.raises(ValueError, match="holdout_fraction"):
        split_problems(_problems(3), 1.5)
    with pytest.raises(ValueError, match="unique ids; duplicated: \\['p0'\\]"):
        split_problems(_problems(3) + _problems(1), 0.5)


def test_math_problem_row_round_trip_and_errors():
    problem = MathProblem(id="x", question="1+1?", answer="2", source="t", solution="1+1=2", meta={"k": [1, 2]})
    assert MathProblem.from_dict(problem.to_dict()) == problem
    defaults = MathProblem.from_dict({"id": "y", "question": "q", "answer": "1", "source": "s"})
    assert defaults.solution is None and defaults.meta == {}
    with pytest.raises(DataError, match="^f.jsonl: row 2: field 'answer': expected str, got int 2$"):
        MathProblem.from_dict({"id": "y", "question": "q", "answer": 2, "source": "s"}, "f.jsonl: row 2")
    with pytest.raises(DataError, match="field 'meta': must hold only JSON values"):
        MathProblem.from_dict({"id": "y", "question": "q", "answer": "1", "source": "s", "meta": {"t": (1, 2)}})
