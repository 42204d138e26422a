"""Adapter over `reasoning-gym` (Apache-2.0): offline procedural tasks with their own scorers.

`reasoning_gym_problems("chain_sum", 100, seed=0)` turns the package's entries into `MathProblem`s;
``meta`` keeps what its scorer needs (task name, generator config, seed, index and the entry's own
metadata), so `reasoning_gym_score(problem, text)` can call the task's `score_answer` later, after the
problem went through JSONL or a tfds dataset. The package is imported only when used: it is heavy
(about 2 s) and not needed by the rest of the data layer.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from jaxalign.data.checks import jsonable
from jaxalign.data.problems import MathProblem

_INSTALL = "pip install reasoning-gym==0.1.25"


def _import_reasoning_gym() -> Any:
    try:
        import reasoning_gym
    except ImportError as e:
        raise ImportError(f"reasoning-gym tasks need the reasoning-gym package ({_INSTALL}): {e}") from e
    return reasoning_gym


def reasoning_gym_tasks() -> list[str]:
    """Names of the tasks the installed reasoning-gym provides."""
    return sorted(_import_reasoning_gym().factory.DATASETS)


def reasoning_gym_problems(task: str, n: int, seed: int = 0, **kwargs: Any) -> list[MathProblem]:
    """`n` problems of reasoning-gym task `task` (e.g. gsm_symbolic, basic_arithmetic, chain_sum,
    simple_equations, fraction_simplification); `kwargs` go to the task's config dataclass.

    Ids are ``rg-<task>-s<seed>-<index>``; ``source`` is ``reasoning_gym/<task>``; the entry's worked
    solution (``metadata["answer_cot"]``, where the task has one) becomes ``solution``. Entries whose
    task accepts many answers (answer ``None``) get ``answer=""``: score those with
    `reasoning_gym_score`, not by string match.
    """
    rg = _import_reasoning_gym()
    if task not in rg.factory.DATASETS:
        raise ValueError(f"unknown reasoning-gym task {task!r}; available: {reasoning_gym_tasks()}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    dataset = rg.create_dataset(task, size=n, seed=seed, **kwargs)
    config = jsonable(kwargs)
    problems = []
    for index in range(n):
        entry = dataset[index]
        # The entry's metadata goes through JSON once here, so the problem compares equal to itself
        # after any JSONL / array_record round trip (tuples would otherwise come back as lists).
        metadata = jsonable(entry["metadata"])
        answer = entry["answer"]
        cot = metadata.get("answer_cot")
        problems.append(MathProblem(
            id=f"rg-{task}-s{seed}-{index:05d}", question=entry["question"],
            answer="" if answer is None else str(answer), source=f"reasoning_gym/{task}",
            solution=cot if isinstance(cot, str) else None,
            meta={"rg_task": task, "rg_seed": seed, "rg_index": index, "rg_config": config,
                  "rg_answer": jsonable(answer), "rg_metadata": metadata}))
    return problems


@functools.lru_cache(maxsize=64)
def _scorer(task: str, seed: int, config_json: str) -> Any:
    # Scorers may read the task's config (tolerances, formats), so the dataset is rebuilt with the
    # problem's own config; one entry is enough, only its `score_answer` is used.
    rg = _import_reasoning_gym()
    return rg.create_dataset(task, size=1, seed=seed, **json.loads(config_json)).score_answer


def reasoning_gym_score(problem: MathProblem, answer_text: str | None) -> float:
    """Score `answer_text` (the model's extracted final answer) with the task's own scorer, in [0, 1]."""
    for key in ("rg_task", "rg_seed", "rg_config", "rg_answer", "rg_metadata"):
        if key not in problem.meta:
            raise ValueError(f"problem {problem.id!r} is not from reasoning_gym_problems: meta lacks {key!r}")
    meta = problem.meta
    score_answer = _scorer(meta["rg_task"], meta["rg_seed"], json.dumps(meta["rg_config"], sort_keys=True))
    entry = {"question": problem.question, "answer": meta["rg_answer"], "metadata": meta["rg_metadata"]}
    return float(score_answer(answer=answer_text, entry=entry))
