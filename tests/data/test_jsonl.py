import copy
import json
import os
import re

import pytest

from jaxalign.data import (
    ArithmeticTask,
    DataError,
    Message,
    PreferencePair,
    ToolCall,
    TrajectoryRecord,
    load_gsm8k,
    read_jsonl,
    write_jsonl,
)
from jaxalign.data.jsonl import EXAMPLE_ROWS, KINDS, docs
from tests.data.helpers import preference_pairs, trajectory_for

GOOD = EXAMPLE_ROWS["trajectories"]


def _write_lines(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def _read_error(tmp_path, kind, bad_row, row_number=3):
    """Error message for a file whose row `row_number` is `bad_row` (the other rows are valid)."""
    good = dict(EXAMPLE_ROWS[kind])
    rows = [{**good, "id": f"ok{i}"} for i in range(row_number - 1)] + [bad_row, {**good, "id": "last"}]
    path = _write_lines(tmp_path / "x.jsonl", rows)
    with pytest.raises(DataError) as info:
        read_jsonl(path, kind)
    message = str(info.value)
    assert message.startswith(f"{path}: row {row_number}: "), message
    return message[len(f"{path}: row {row_number}: "):]


def test_round_trip_of_every_kind(tmp_path):
    problems = ArithmeticTask(num_steps=3, seed=0).generate(6)
    cases = {"problems": problems, "trajectories": [trajectory_for(p) for p in problems],
             "preferences": preference_pairs(load_gsm8k()[:6])}
    for kind, records in cases.items():
        path = tmp_path / f"{kind}.jsonl"
        assert write_jsonl(path, records) == 6
        assert read_jsonl(path, kind) == records
        assert len(path.read_text(encoding="utf-8").splitlines()) == 6
    assert [t.tool_calls for t in cases["trajectories"]] == [3] * 6
    row = json.loads((tmp_path / "trajectories.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert row["num_tool_calls"] == 3 and row["messages"][2]["tool_calls"][0]["name"] == "code_interpreter"


def test_example_rows_are_valid_and_documented():
    for kind, row in EXAMPLE_ROWS.items():
        assert KINDS[kind].from_dict(row).to_dict() == row
        assert json.dumps(row) in docs
    for field in ["final_answer", "tool_calls", "num_tool_calls", "chosen", "rejected", "category", "solution"]:
        assert f'"{field}"' in docs


def test_bad_role_message_names_file_row_and_field(tmp_path):
    bad = copy.deepcopy(GOOD)
    bad["messages"][2]["role"] = "bot"
    assert _read_error(tmp_path, "trajectories", bad, row_number=7) == (
        "field 'messages[2].role': expected one of ['system', 'user', 'assistant', 'tool'], got 'bot'")


@pytest.mark.parametrize("kind,mutate,expected", [
    ("trajectories", lambda r: r.pop("final_answer"), "field 'final_answer': required field is missing"),
    ("trajectories", lambda r: r["messages"][0].pop("content"),
     "field 'messages[0].content': required field is missing"),
    ("trajectories", lambda r: r.update(id=5), "field 'id': expected str, got int 5"),
    ("trajectories", lambda r: r.update(messages="hi"), "field 'messages': expected list, got str 'hi'"),
    ("trajectories", lambda r: r.update(num_tool_calls=True), "field 'num_tool_calls': expected int, got bool True"),
    ("trajectories", lambda r: r.update(num_tool_calls=5),
     "field 'num_tool_calls': says 5 but the messages hold 2 tool calls"),
    ("trajectories", lambda r: r["messages"][1]["tool_calls"][0]["arguments"].pop("code"),
     "field 'messages[1].tool_calls[0].arguments.code': required field is missing"),
    ("trajectories", lambda r: r["messages"][0].update(tool_calls=[{"name": "x", "arguments": {}}]),
     "field 'messages[0].tool_calls': only assistant messages carry tool calls, not 'user'"),
    ("trajectories", lambda r: r.update(extra=1), "field 'extra': unknown field; valid fields are"),
    ("trajectories", lambda r: r.update(messages=[]), "field 'messages': must hold at least one message"),
    ("problems", lambda r: r.pop("question"), "field 'question': required field is missing"),
    ("problems", lambda r: r.update(answer=1372), "field 'answer': expected str, got int 1372"),
    ("problems", lambda r: r.update(meta=[]), "field 'meta': expected object, got list []"),
    ("preferences", lambda r: r.pop("rejected"), "field 'rejected': required field is missing"),
    ("preferences", lambda r: r.update(chosen=None), "field 'chosen': expected str, got null None"),
    ("preferences", lambda r: r.update(category=""), "field 'category': must be a non-empty string"),
])
def test_bad_fields(tmp_path, kind, mutate, expected):
    row = copy.deepcopy(EXAMPLE_ROWS[kind])
    mutate(row)
    assert _read_error(tmp_path, kind, row).startswith(expected)


def test_tool_call_must_be_followed_by_its_output(tmp_path):
    missing_output = copy.deepcopy(GOOD)
    del missing_output["messages"][2]  # the tool output of the first call
    message = _read_error(tmp_path, "trajectories", missing_output)
    assert message == ("field 'messages[1].tool_calls[0]': tool call is not followed by a 'tool' message "
                       "(messages[2] has role 'assistant')")
    at_end = copy.deepcopy(GOOD)
    at_end["messages"] = at_end["messages"][:4]
    assert _read_error(tmp_path, "trajectories", at_end) == (
        "field 'messages[3].tool_calls[0]': tool call is not followed by a 'tool' message (end of messages)")
    orphan = copy.deepcopy(GOOD)
    orphan["messages"].insert(1, {"role": "tool", "content": "42"})
    assert _read_error(tmp_path, "trajectories", orphan).startswith(
        "field 'messages[1].role': a 'tool' message must follow an assistant tool call")


def test_invalid_json_non_object_and_duplicate_ids_name_the_row(tmp_path):
    assert _read_error(tmp_path, "problems", '{"id": "p", "question": ', row_number=4).startswith("invalid JSON: ")
    assert _read_error(tmp_path, "problems", "[1, 2]", row_number=2) == "expected a JSON object, got list"
    duplicate = dict(EXAMPLE_ROWS["problems"], id="ok0")
    assert _read_error(tmp_path, "problems", duplicate) == (
        f"field 'id': duplicate id 'ok0' (first at {tmp_path / 'x.jsonl'}: row 1)")


def test_blank_lines_are_skipped_but_counted(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text("\n" + json.dumps(EXAMPLE_ROWS["problems"]) + "\n\n" + json.dumps({"id": "b"}) + "\n")
    with pytest.raises(DataError, match=re.escape(f"{path}: row 4: field 'question': required field is missing")):
        read_jsonl(path, "problems")
    with pytest.raises(ValueError, match="unknown record kind 'problem'"):
        read_jsonl(path, "problem")


def test_write_is_atomic(tmp_path):
    path = tmp_path / "sub" / "pairs.jsonl"
    pairs = [PreferencePair(id="a", prompt="p", chosen="c", rejected="r")]
    write_jsonl(path, pairs)
    before = path.read_text(encoding="utf-8")
    broken = PreferencePair(id="b", prompt="p", chosen="c", rejected="r", meta={"bad": {1, 2}})
    with pytest.raises(DataError, match="record 'b': not JSON-serialisable"):
        write_jsonl(path, pairs + [broken])
    assert path.read_text(encoding="utf-8") == before
    assert os.listdir(path.parent) == ["pairs.jsonl"]  # no temporary file left behind


def test_records_built_in_code_are_checked_too():
    with pytest.raises(DataError, match="trajectory 't': field 'messages\\[0\\].tool_calls\\[0\\]': tool call is not"):
        TrajectoryRecord(id="t", source="s", final_answer=None,
                         messages=[Message("assistant", "", (ToolCall("code_interpreter", {"code": "1"}),))])
