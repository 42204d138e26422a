"""Trajectories (chat messages with tool calls) to token ids and a loss mask, per tool format.

The same `ToolFormat` objects render SFT data and parse RL rollouts, so what the cold start
teaches is exactly what the rollout loop recognises and answers. Policy text (assistant content,
tool calls, the end-of-turn token) gets loss-mask 1; the prompt and tool outputs get 0.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from jaxalign.rollout.formats import ToolFormat, get_format


@dataclasses.dataclass
class RenderedExample:
    """Token ids [T] and loss mask [T] (1 on policy tokens) of one trajectory."""

    ids: np.ndarray
    loss_mask: np.ndarray
    prompt_len: int
    tool_calls: int
    source_id: str = ""


def prompt_messages(messages: Sequence[dict]) -> list[dict]:
    """The leading system/user messages (everything before the first assistant message)."""
    out = []
    for m in messages:
        if m["role"] == "assistant":
            break
        out.append({"role": m["role"], "content": m["content"]})
    return out


def render_messages(messages: Sequence[dict], tokenizer, tool_format: str | ToolFormat,
                    source_id: str = "") -> RenderedExample:
    """Renders a trajectory in `tool_format`; assistant `tool_calls` become calls in that format.

    Messages are dicts with role/content (and for assistants optionally
    `tool_calls: [{"name": "code_interpreter", "arguments": {"code": ...}}]`), each call followed
    by a tool message with its output, as in `jaxalign.data` trajectory records.
    """
    fmt = get_format(tool_format) if isinstance(tool_format, str) else tool_format
    head = prompt_messages(messages)
    if len(head) == len(messages):
        raise ValueError(f"trajectory {source_id!r} has no assistant message")
    ids = list(tokenizer.apply_chat_template(head, add_generation_prompt=True, tokenize=True, return_dict=False))
    mask = [0] * len(ids)
    prompt_len = len(ids)
    eos = tokenizer.eos_token_id
    calls = 0

    def add(text: str, policy: bool) -> None:
        piece = tokenizer.encode(text, add_special_tokens=False) if text else []
        ids.extend(piece)
        mask.extend([int(policy)] * len(piece))

    rest = list(messages[len(head):])
    for i, m in enumerate(rest):
        role = m["role"]
        if role == "assistant":
            text = m.get("content") or ""
            for call in m.get("tool_calls") or []:
                sep = "" if not text or text.endswith("\n") else "\n"
                text += sep + fmt.render_call(call["arguments"]["code"])
                calls += 1
            add(text, True)
            nxt = rest[i + 1]["role"] if i + 1 < len(rest) else None
            if fmt.ends_turn or nxt is None:  # the policy closes its turn (hermes) or the episode
                ids.append(eos)
                mask.append(1)
        elif role == "tool":
            context = tokenizer.decode(ids)
            add(fmt.render_output(m["content"], tokenizer, context), False)
        else:
            raise ValueError(f"trajectory {source_id!r}: unexpected {role!r} message after the prompt")
    return RenderedExample(np.asarray(ids, np.int32), np.asarray(mask, np.int32), prompt_len, calls, source_id)
