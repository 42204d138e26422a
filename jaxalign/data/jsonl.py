"""JSONL files of problems, trajectories and preference pairs: strict reading, atomic writing.

One JSON object per line; blank lines are skipped but still counted, so "row N" in an error is
line N of the file. ``print(jaxalign.data.jsonl.docs)`` shows every schema with an example row.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from typing import Any

from jaxalign.data import problems, records
from jaxalign.data.checks import DataError, field_error
from jaxalign.data.problems import MathProblem
from jaxalign.data.records import PreferencePair, TrajectoryRecord

Record = MathProblem | TrajectoryRecord | PreferencePair

# The plug-in point between a kind's name (files, CLI, tfds metadata) and its record class.
KINDS: dict[str, type[MathProblem] | type[TrajectoryRecord] | type[PreferencePair]] = {
    "problems": MathProblem,
    "trajectories": TrajectoryRecord,
    "preferences": PreferencePair,
}

# One valid row per kind, printed in `docs` and validated by the tests, so the documentation cannot rot.
EXAMPLE_ROWS: dict[str, dict[str, Any]] = {
    "problems": {"id": "arith-2x5-s0-000000", "question": "Let a = 48213 * 9127. Let b = a % 9973. What is b?",
                 "answer": "1372", "source": "arithmetic", "solution": None, "meta": {}},
    "trajectories": {
        "id": "arith-2x5-s0-000000", "source": "arithmetic",
        "messages": [
            {"role": "user", "content": "Let a = 48213 * 9127. Let b = a % 9973. What is b?"},
            {"role": "assistant", "content": "",
             "tool_calls": [{"name": "code_interpreter", "arguments": {"code": "a = 48213 * 9127\nprint(a)"}}]},
            {"role": "tool", "content": "440040051\n"},
            {"role": "assistant", "content": "",
             "tool_calls": [{"name": "code_interpreter", "arguments": {"code": "b = a % 9973\nprint(b)"}}]},
            {"role": "tool", "content": "1372\n"},
            {"role": "assistant", "content": "The answer is \\boxed{1372}."}],
        "final_answer": "1372", "num_tool_calls": 2, "meta": {}},
    "preferences": {"id": "pair-0", "prompt": "What is 2 + 3?", "chosen": "2 + 3 = 5.", "rejected": "2 + 3 = 6.",
                    "category": "arithmetic", "meta": {"wrong_sentence": 0}},
}

docs = ("JSONL record schemas (one JSON object per line; unknown fields are rejected).\n\n"
        "== kind 'problems' (MathProblem) ==\n" + problems.__doc__.split("\n\n", 1)[1] + "\n"
        "== kinds 'trajectories' (TrajectoryRecord) and 'preferences' (PreferencePair) ==\n"
        + records.__doc__.split("\n\n", 1)[1] + "\n== example rows (one line each in a file) ==\n"
        + "".join(f"{kind}:\n{json.dumps(row)}\n" for kind, row in EXAMPLE_ROWS.items()))


def record_class(kind: str) -> type[MathProblem] | type[TrajectoryRecord] | type[PreferencePair]:
    """The record class of `kind` (one of `KINDS`)."""
    if kind not in KINDS:
        raise ValueError(f"unknown record kind {kind!r}; expected one of {list(KINDS)}")
    return KINDS[kind]


def parse_rows(rows: Iterable[tuple[str, Any]], kind: str) -> list[Record]:
    """Validate ``(where, row)`` pairs as records of `kind`; ids must be unique."""
    cls = record_class(kind)
    out: list[Record] = []
    first_seen: dict[str, str] = {}
    for where, row in rows:
        record = cls.from_dict(row, where)
        if record.id in first_seen:
            raise field_error(where, "id", f"duplicate id {record.id!r} (first at {first_seen[record.id]})")
        first_seen[record.id] = where
        out.append(record)
    return out


def _json_rows(path: str) -> Iterable[tuple[str, Any]]:
    if not os.path.isfile(path):
        raise DataError(f"{path}: {'is a directory, not a JSONL file' if os.path.isdir(path) else 'no such file'}")
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}: row {line_no}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: invalid JSON: {e.msg} (column {e.colno})") from None
            yield where, row


def read_jsonl(path: str | os.PathLike, kind: str) -> list[Record]:
    """All records of a JSONL file of `kind` ("problems", "trajectories" or "preferences").

    Raises `DataError` naming the file, the 1-based row (line) and the field on the first bad row:
    invalid JSON, a missing or unknown field, a wrong type, a bad role, a tool call without its
    output, a duplicate id; also a missing file and a file without any record.
    """
    record_class(kind)  # an unknown kind fails before the file is opened
    records = parse_rows(_json_rows(os.fspath(path)), kind)
    if not records:
        raise DataError(f"{os.fspath(path)}: no {kind} in the file (it is empty)")
    return records


def record_json(record: Record) -> str:
    """One record as a compact JSON line (no NaN, non-ASCII kept as is)."""
    try:
        return json.dumps(record.to_dict(), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise DataError(f"record {record.id!r}: not JSON-serialisable: {e}") from e


def write_jsonl(path: str | os.PathLike, items: Iterable[Record]) -> int:
    """Write records (any of the record classes) as JSONL; returns the number written.

    Atomic: the lines go to a temporary file in the same directory, which then replaces `path`, so a
    crash or a bad record never leaves a half-written file where a complete one is expected.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    count = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for item in items:
                f.write(record_json(item) + "\n")
                count += 1
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return count
