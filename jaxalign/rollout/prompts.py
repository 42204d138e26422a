"""Turning problems into prompt token ids with the chat template."""

from __future__ import annotations

from jaxalign.data.synthesis import SYSTEM_PROMPT


def problem_messages(question: str, system_prompt: str | None = SYSTEM_PROMPT) -> list[dict]:
    """The chat messages that pose `question` (with the tool-use system prompt)."""
    head = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return head + [{"role": "user", "content": question}]


def problem_prompt(question: str, tokenizer, system_prompt: str | None = SYSTEM_PROMPT) -> list[int]:
    """Prompt token ids ending with the assistant header (generation starts right after)."""
    return list(tokenizer.apply_chat_template(problem_messages(question, system_prompt), add_generation_prompt=True,
                                              tokenize=True, return_dict=False))
