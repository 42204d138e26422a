"""Interaction-density statistics and selection of tool-use trajectories (ASTER cold-start data).

ASTER's finding: a small set of *interaction-dense* trajectories (many tool calls each) is the best
prior for tool RL, so the tooling measures tool calls per trajectory and selects by it.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from jaxalign.data.records import TrajectoryRecord

_BAR_WIDTH = 40
_MAX_ROWS = 20


def _summary(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"mean": 0.0, "median": 0.0, "min": 0.0, "max": 0.0, "total": 0.0}
    return {"mean": float(statistics.fmean(values)), "median": float(statistics.median(values)),
            "min": float(min(values)), "max": float(max(values)), "total": float(sum(values))}


def _encoder(tokenizer: Any) -> Callable[[str], Sequence[int]]:
    # Tokenizer objects (transformers, sentencepiece) expose `encode`; a plain callable is used as is.
    encode = tokenizer.encode if hasattr(tokenizer, "encode") else tokenizer
    if not callable(encode):
        raise TypeError(f"tokenizer must have an encode(str) method or be callable, got {type(tokenizer).__name__}")
    return encode


def _texts(record: TrajectoryRecord) -> Iterable[tuple[str, str]]:
    """(role, text) of everything the model reads or writes: contents and the code of tool calls."""
    for message in record.messages:
        yield message.role, message.content
        for call in message.tool_calls:
            code = call.arguments.get("code")
            if isinstance(code, str):
                yield message.role, code


def trajectory_stats(records: Sequence[TrajectoryRecord], tokenizer: Any = None) -> dict[str, Any]:
    """Counts and distributions over trajectories.

    Returns a dict with ``count``; ``tool_calls``, ``messages`` and ``chars`` summaries (mean,
    median, min, max, total per trajectory); ``tool_call_histogram`` ({calls: trajectories}, sorted);
    ``with_final_answer``; and, when `tokenizer` is given (an object with ``encode(str)`` or a
    callable returning token ids; counts are whatever it returns, so for a transformers tokenizer that
    adds a BOS token pass ``lambda s: tok.encode(s, add_special_tokens=False)``), ``tokens`` and
    ``assistant_tokens`` summaries. Characters and
    tokens cover message contents plus tool-call code, not chat-template markup. Empty input gives
    zero summaries.
    """
    calls = [r.tool_calls for r in records]
    stats: dict[str, Any] = {
        "count": len(records),
        "tool_calls": _summary(calls),
        "tool_call_histogram": dict(sorted(Counter(calls).items())),
        "messages": _summary([len(r.messages) for r in records]),
        "chars": _summary([sum(len(t) for _, t in _texts(r)) for r in records]),
        "with_final_answer": sum(r.final_answer is not None for r in records),
    }
    if tokenizer is not None:
        encode = _encoder(tokenizer)
        totals, assistant = [], []
        for record in records:
            counts = [(role, len(encode(text))) for role, text in _texts(record) if text]
            totals.append(sum(n for _, n in counts))
            assistant.append(sum(n for role, n in counts if role == "assistant"))
        stats["tokens"] = _summary(totals)
        stats["assistant_tokens"] = _summary(assistant)
    return stats


def select_by_density(records: Sequence[TrajectoryRecord], min_tool_calls: int = 0,
                      top_k: int | None = None) -> list[TrajectoryRecord]:
    """Trajectories with at least `min_tool_calls` tool calls; with `top_k`, the k densest of them.

    Without `top_k` the input order is kept. With `top_k` the result is ordered densest first, ties
    broken by id (ascending), so the selection is reproducible whatever the input order.
    """
    if min_tool_calls < 0:
        raise ValueError(f"min_tool_calls must be >= 0, got {min_tool_calls}")
    if top_k is not None and top_k < 0:
        raise ValueError(f"top_k must be >= 0 or None, got {top_k}")
    kept = [r for r in records if r.tool_calls >= min_tool_calls]
    if top_k is None:
        return kept
    return sorted(kept, key=lambda r: (-r.tool_calls, r.id))[:top_k]


def _histogram_rows(histogram: dict[int, int]) -> list[tuple[str, int]]:
    """Rows (label, count) covering every value from min to max, bucketed if there are too many."""
    if not histogram:
        return []
    low, high = min(histogram), max(histogram)
    width = max(1, math.ceil((high - low + 1) / _MAX_ROWS))
    rows = []
    for start in range(low, high + 1, width):
        end = min(start + width - 1, high)
        label = str(start) if start == end else f"{start}-{end}"
        rows.append((label, sum(histogram.get(v, 0) for v in range(start, end + 1))))
    return rows


def format_stats(stats: dict[str, Any]) -> str:
    """A small text table of `trajectory_stats` output with an ASCII histogram of tool calls."""
    lines = [f"trajectories: {stats['count']}   with final answer: {stats['with_final_answer']}", ""]
    keys = [k for k in ("tool_calls", "messages", "chars", "tokens", "assistant_tokens") if k in stats]
    lines.append(f"{'per trajectory':<18}{'mean':>10}{'median':>10}{'min':>10}{'max':>10}{'total':>12}")
    for key in keys:
        s = stats[key]
        lines.append(f"{key:<18}{s['mean']:>10.2f}{s['median']:>10.1f}{s['min']:>10.0f}{s['max']:>10.0f}"
                     f"{s['total']:>12.0f}")
    rows = _histogram_rows(stats["tool_call_histogram"])
    if rows:
        lines += ["", "tool calls per trajectory"]
        label_width = max(len(label) for label, _ in rows)
        peak = max(count for _, count in rows) or 1
        for label, count in rows:
            bar = "#" * math.ceil(count / peak * _BAR_WIDTH) if count else ""
            lines.append(f"{label:>{label_width}} | {bar} {count}")
    return "\n".join(lines)
