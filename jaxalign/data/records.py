"""Tool-use trajectories (cold-start SFT data) and preference pairs (reward-model data).

Trajectory row schema (JSONL kind ``"trajectories"``)::

    {"id": "arith-3x5-s0-000000",        # str, required, non-empty, unique in the file
     "source": "arithmetic",              # str, required, non-empty
     "messages": [                        # list, required, non-empty
        {"role": "system", "content": "Use the code interpreter."},
        {"role": "user", "content": "Let a = 48213 * 9127. ... What is c?"},
        {"role": "assistant", "content": "First a.",
         "tool_calls": [{"name": "code_interpreter", "arguments": {"code": "a = 48213 * 9127\\nprint(a)"}}]},
        {"role": "tool", "content": "440040051\\n"},
        {"role": "assistant", "content": "The answer is \\\\boxed{4371}."}],
     "final_answer": "4371",              # str | null, required
     "num_tool_calls": 1,                 # int, optional: checked against the count of tool calls
     "meta": {}}                          # object, optional (default {}): free-form JSON

Message rules: ``role`` is one of system / user / assistant / tool and ``content`` is a string;
only assistant messages may carry ``tool_calls`` (a list of ``{"name": str, "arguments": object}``;
a ``code_interpreter`` call needs ``arguments.code: str``); the k tool calls of an assistant message
must be answered by the next k messages, all with role ``tool`` (the outputs, in order), and a
``tool`` message may only answer such a call.

Preference pair row schema (JSONL kind ``"preferences"``)::

    {"id": "gsm8k-test-0000-s2",          # str, required, non-empty, unique in the file
     "prompt": "Janet's ducks lay ...",   # str, required, non-empty
     "chosen": "Janet sells ...",         # str, required: the preferred response
     "rejected": "Janet sells ...",       # str, required: the dispreferred response
     "category": "gsm8k",                 # str, optional (default "default"): for per-category accuracy
     "meta": {"wrong_sentence": 2}}       # object, optional (default {}): free-form JSON
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from jaxalign.data.checks import (
    DEFAULT_WHERE,
    check_json_meta,
    check_keys,
    field_error,
    require_choice,
    require_object,
    take,
)

ROLES = ("system", "user", "assistant", "tool")
CODE_TOOL = "code_interpreter"


@dataclasses.dataclass(frozen=True)
class ToolCall:
    """One tool call written by the assistant: ``name`` and JSON ``arguments`` (``{"code": ...}``)."""

    name: str
    arguments: dict[str, Any]

    @classmethod
    def from_dict(cls, row: Any, where: str = DEFAULT_WHERE, path: str = "tool_call") -> ToolCall:
        """Validate one tool call object found at field `path` of the row at `where`."""
        require_object(row, where, path)
        check_keys(row, ("name", "arguments"), where, path)
        name = take(row, "name", str, where, path, nonempty=True)
        arguments = check_json_meta(take(row, "arguments", dict, where, path), where, f"{path}.arguments")
        if name == CODE_TOOL:
            take(arguments, "code", str, where, f"{path}.arguments")
        return cls(name=name, arguments=arguments)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of this call."""
        return {"name": self.name, "arguments": self.arguments}


@dataclasses.dataclass(frozen=True)
class Message:
    """One chat message; ``tool_calls`` only on assistant messages."""

    role: str
    content: str
    tool_calls: tuple[ToolCall, ...] = ()

    @classmethod
    def from_dict(cls, row: Any, where: str = DEFAULT_WHERE, path: str = "message") -> Message:
        """Validate one message object found at field `path` of the row at `where`."""
        require_object(row, where, path)
        check_keys(row, ("role", "content", "tool_calls"), where, path)
        role = require_choice(take(row, "role", str, where, path), ROLES, where, f"{path}.role")
        content = take(row, "content", str, where, path)
        raw_calls = take(row, "tool_calls", list, where, path, required=False, default=[])
        if raw_calls and role != "assistant":
            raise field_error(where, f"{path}.tool_calls", f"only assistant messages carry tool calls, not {role!r}")
        calls = tuple(ToolCall.from_dict(c, where, f"{path}.tool_calls[{i}]") for i, c in enumerate(raw_calls))
        return cls(role=role, content=content, tool_calls=calls)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of this message (``tool_calls`` written only when present)."""
        row: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            row["tool_calls"] = [c.to_dict() for c in self.tool_calls]
        return row


def _check_tool_turns(messages: tuple[Message, ...], where: str) -> None:
    """Every tool call is answered by the next message(s), role ``tool``; no unanswered tool output."""
    pending: list[str] = []  # field paths of the calls still waiting for their output
    for i, message in enumerate(messages):
        if message.role == "tool":
            if not pending:
                raise field_error(where, f"messages[{i}].role", "a 'tool' message must follow an assistant "
                                                                "tool call (none is waiting for output)")
            pending.pop(0)
            continue
        if pending:
            raise field_error(where, pending[0], f"tool call is not followed by a 'tool' message "
                                                 f"(messages[{i}] has role {message.role!r})")
        pending = [f"messages[{i}].tool_calls[{k}]" for k in range(len(message.tool_calls))]
    if pending:
        raise field_error(where, pending[0], "tool call is not followed by a 'tool' message (end of messages)")


@dataclasses.dataclass(frozen=True)
class TrajectoryRecord:
    """A multi-turn tool-use trajectory (see the module docstring for the row schema and rules)."""

    id: str
    source: str
    messages: tuple[Message, ...]
    final_answer: str | None
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    FIELDS = ("id", "source", "messages", "final_answer", "num_tool_calls", "meta")

    def __post_init__(self) -> None:
        # Built in code rather than from a row: apply the same turn rules, and accept a list.
        object.__setattr__(self, "messages", tuple(self.messages))
        _check_tool_turns(self.messages, f"trajectory {self.id!r}")

    @classmethod
    def from_dict(cls, row: Any, where: str = DEFAULT_WHERE) -> TrajectoryRecord:
        """Validate one trajectory row; errors name `where` and the field (e.g. ``messages[2].role``)."""
        row = require_object(row, where)
        check_keys(row, cls.FIELDS, where)
        record_id = take(row, "id", str, where, nonempty=True)
        source = take(row, "source", str, where, nonempty=True)
        raw = take(row, "messages", list, where)
        if not raw:
            raise field_error(where, "messages", "must hold at least one message")
        messages = tuple(Message.from_dict(m, where, f"messages[{i}]") for i, m in enumerate(raw))
        _check_tool_turns(messages, where)
        final_answer = take(row, "final_answer", str, where, nullable=True)
        count = take(row, "num_tool_calls", int, where, required=False)
        actual = sum(len(m.tool_calls) for m in messages)
        if count is not None and count != actual:
            raise field_error(where, "num_tool_calls", f"says {count} but the messages hold {actual} tool calls")
        meta = check_json_meta(take(row, "meta", dict, where, required=False, default={}), where)
        return cls(id=record_id, source=source, messages=messages, final_answer=final_answer, meta=meta)

    @property
    def tool_calls(self) -> int:
        """Number of tool calls in the trajectory (its interaction density)."""
        return sum(len(m.tool_calls) for m in self.messages)

    def to_dict(self) -> dict[str, Any]:
        """The JSON row, with ``num_tool_calls`` written so a reader can check it."""
        return {"id": self.id, "source": self.source, "messages": [m.to_dict() for m in self.messages],
                "final_answer": self.final_answer, "num_tool_calls": self.tool_calls, "meta": self.meta}


@dataclasses.dataclass(frozen=True)
class PreferencePair:
    """A prompt with a preferred (`chosen`) and a dispreferred (`rejected`) response."""

    id: str
    prompt: str
    chosen: str
    rejected: str
    category: str = "default"
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    FIELDS = ("id", "prompt", "chosen", "rejected", "category", "meta")

    @classmethod
    def from_dict(cls, row: Any, where: str = DEFAULT_WHERE) -> PreferencePair:
        """Validate one preference row; errors name `where` and the field."""
        row = require_object(row, where)
        check_keys(row, cls.FIELDS, where)
        pair = cls(
            id=take(row, "id", str, where, nonempty=True),
            prompt=take(row, "prompt", str, where, nonempty=True),
            chosen=take(row, "chosen", str, where, nonempty=True),
            rejected=take(row, "rejected", str, where, nonempty=True),
            category=take(row, "category", str, where, required=False, default="default", nonempty=True),
            meta=check_json_meta(take(row, "meta", dict, where, required=False, default={}), where),
        )
        if pair.chosen == pair.rejected:  # no preference to learn: the Bradley-Terry gradient is exactly 0
            raise field_error(where, "rejected", "is the same text as 'chosen'")
        return pair

    def to_dict(self) -> dict[str, Any]:
        """The JSON row of this pair (every field written)."""
        return {"id": self.id, "prompt": self.prompt, "chosen": self.chosen, "rejected": self.rejected,
                "category": self.category, "meta": self.meta}


def message_dicts(record: TrajectoryRecord) -> list[Mapping[str, Any]]:
    """The messages as plain dicts, the shape chat templates and the SFT data pipeline take."""
    return [m.to_dict() for m in record.messages]
