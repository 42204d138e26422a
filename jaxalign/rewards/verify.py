"""Outcome rewards: the last \\boxed{...} in the final text against the reference answer.

Binary by default (ASTER: 1 if correct, else 0; no format or tool bonus). Matching is strict
string equality after light normalisation; math-verify's symbolic equivalence is an option.
User reward functions plug in through `register_reward`.
"""

from __future__ import annotations

from collections.abc import Callable

RewardFn = Callable[[str, str], float]  # (response text, reference answer) -> reward


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (braces matched, nesting allowed), or None."""
    start = text.rfind("\\boxed")
    while start != -1:
        i = start + len("\\boxed")
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            depth, j = 0, i
            while j < len(text):
                if text[j] == "{":
                    depth += 1
                elif text[j] == "}":
                    depth -= 1
                    if depth == 0:
                        return text[i + 1:j]
                j += 1
        start = text.rfind("\\boxed", 0, start)  # unclosed: look for an earlier complete one
    return None


def normalize(answer: str) -> str:
    """Strips spaces, a trailing period and thousands separators in plain numbers: '1,000.' -> '1000'."""
    a = answer.strip().rstrip(".").strip()
    a = a.replace("$", "").replace(" ", "")
    if a.replace(",", "").lstrip("-").replace(".", "", 1).isdigit():
        a = a.replace(",", "")
    return a


def strict_reward(text: str, answer: str) -> float:
    """1.0 when the last boxed answer equals the reference (normalised strings), else 0.0."""
    got = last_boxed(text)
    return float(got is not None and normalize(got) == normalize(answer))


def math_verify_reward(text: str, answer: str) -> float:
    """1.0 when math-verify finds the last boxed answer equivalent to the reference."""
    got = last_boxed(text)
    if got is None:
        return 0.0
    if normalize(got) == normalize(answer):
        return 1.0
    from math_verify import parse, verify

    try:
        return float(verify(parse(f"${answer}$"), parse(f"${got}$")))
    except Exception:  # math-verify raises on unparsable input: that is a wrong answer, not a crash
        return 0.0


REWARDS: dict[str, RewardFn] = {"strict": strict_reward, "math_verify": math_verify_reward}


def register_reward(name: str, fn: RewardFn) -> None:
    """Adds a reward function `(response_text, reference_answer) -> float` under `name`."""
    REWARDS[name] = fn


def get_reward(name: str) -> RewardFn:
    if name not in REWARDS:
        raise KeyError(f"unknown reward {name!r}; registered: {sorted(REWARDS)}")
    return REWARDS[name]
