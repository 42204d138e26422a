"""Tool-call formats: how a tool call is recognised in policy text and how its output is rendered.

A format is a plug-in (register your own with `register_format`). Two ship:

* "markdown": the policy writes a fenced ```python block; the output comes back as a fenced
  ```output block inside the same assistant turn.
* "hermes": Qwen3/Hermes style `<tool_call>{"name": "code_interpreter", "arguments": {"code":
  "..."}}</tool_call>` at the end of an assistant turn; the output comes back as a tool-role turn
  rendered with the model's own chat template (which must be append-only).
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Protocol


@dataclasses.dataclass(frozen=True)
class ToolCall:
    """A parsed tool call: the code to run, and where in the segment text the call ends."""

    code: str
    end: int  # character offset just past the call in the segment text
    error: str | None = None  # a malformed call (reported back to the policy as the tool output)


class ToolFormat(Protocol):
    """How tool calls look in text, and how their results are appended."""

    name: str
    ends_turn: bool  # the call closes the assistant turn (hermes) rather than sitting inside it

    def markers(self) -> tuple[str, ...]:
        """Substrings whose tokens should pause decoding so the host can look for a call."""

    def find_call(self, text: str) -> ToolCall | None:
        """The first complete tool call in `text` (the policy text since the last tool output)."""

    def render_output(self, output: str, tokenizer, context_text: str) -> str:
        """Text appended after a call: the tool's output wrapped for this format."""

    def render_call(self, code: str) -> str:
        """How the policy writes a call of `code` (used to build SFT data)."""


class MarkdownFormat:
    """```python ... ``` answered by ```output ... ```."""

    name = "markdown"
    ends_turn = False
    _block = re.compile(r"```python[ \t]*\n(.*?)```", re.S)

    def markers(self) -> tuple[str, ...]:
        return ("```",)

    def find_call(self, text: str) -> ToolCall | None:
        m = self._block.search(text)
        if m is None:
            return None
        return ToolCall(code=m.group(1), end=m.end())

    def render_call(self, code: str) -> str:
        return f"```python\n{code.rstrip(chr(10))}\n```"

    def render_output(self, output: str, tokenizer, context_text: str) -> str:
        lead = "" if context_text.endswith("\n") else "\n"
        body = output if output.endswith("\n") or not output else output + "\n"
        return f"{lead}```output\n{body}```\n"


class HermesFormat:
    """<tool_call>{"name": ..., "arguments": {"code": ...}}</tool_call>, answered by a tool turn."""

    name = "hermes"
    ends_turn = True
    _call = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.S)
    tool_name = "code_interpreter"

    def markers(self) -> tuple[str, ...]:
        return ()  # the call closes the turn: decoding pauses at the end-of-turn token anyway

    def find_call(self, text: str) -> ToolCall | None:
        m = self._call.search(text)
        if m is None:
            return None
        try:
            payload = json.loads(m.group(1))
            code = payload["arguments"]["code"]
            if payload.get("name", self.tool_name) != self.tool_name or not isinstance(code, str):
                raise ValueError(f"expected {self.tool_name} with a string 'code' argument")
        except (ValueError, KeyError, TypeError) as e:
            return ToolCall(code="", end=m.end(), error=f"invalid tool call: {e}")
        return ToolCall(code=code, end=m.end())

    def render_call(self, code: str) -> str:
        payload = json.dumps({"name": self.tool_name, "arguments": {"code": code}})
        return f"<tool_call>\n{payload}\n</tool_call>"

    def render_output(self, output: str, tokenizer, context_text: str) -> str:
        """The chat template's rendering of a tool turn plus the next assistant header.

        Found as the difference between the template rendering the conversation with and without
        the tool message; `context_text` (everything so far, ending with the assistant's
        end-of-turn token) must be a prefix of the longer rendering: the template must be
        append-only, or token-in/token-out cannot hold and we refuse rather than drift.
        """
        probe = [{"role": "user", "content": "\x00"}, {"role": "assistant", "content": "\x01"}]
        before = tokenizer.apply_chat_template(probe, tokenize=False)
        after = tokenizer.apply_chat_template(probe + [{"role": "tool", "content": output}], tokenize=False,
                                              add_generation_prompt=True)
        if not after.startswith(before[: before.index("\x01") + 1]):
            raise ValueError("chat template is not append-only around tool turns")
        tail_after_content = before[before.index("\x01") + 1:]  # e.g. "<|im_end|>\n"
        turn = after[before.index("\x01") + 1:]
        # The policy already produced the end-of-turn token (it is its stop token); strip what it
        # produced from the template's tail so nothing is duplicated.
        eos_text = tail_after_content.rstrip("\n")
        if eos_text and turn.startswith(eos_text) and context_text.endswith(eos_text):
            turn = turn[len(eos_text):]
        return turn


FORMATS: dict[str, ToolFormat] = {"markdown": MarkdownFormat(), "hermes": HermesFormat()}


def register_format(fmt: ToolFormat) -> None:
    """Adds a tool-call format (a plug-in point)."""
    FORMATS[fmt.name] = fmt


def get_format(name: str) -> ToolFormat:
    if name not in FORMATS:
        raise KeyError(f"unknown tool format {name!r}; known: {sorted(FORMATS)}")
    return FORMATS[name]
