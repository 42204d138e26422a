"""Sentence splitters: a plug-in registry and a rule-based default.

A splitter maps a text to its sentences such that `"".join(sentences) == text` exactly: the
whitespace between two sentences opens the next one, so an end-of-sentence token placed right
after a sentence follows its last visible character. Register your own (e.g. a neural splitter
with a threshold, as in the paper's code) with `register_splitter`.
"""

from __future__ import annotations

import re
from collections.abc import Callable

Splitter = Callable[[str], list[str]]

ABBREVIATIONS = frozenset({
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "ft", "vs", "etc", "e.g", "i.e", "cf", "al",
    "approx", "no", "nos", "fig", "figs", "vol", "inc", "ltd", "co", "corp", "dept", "est", "min", "max",
    "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "p", "pp", "a.m",
    "p.m", "u.s", "u.k", "ph.d", "lbs", "oz", "hr", "hrs", "sq", "cm", "mm", "km", "kg",
})
"""Words (lower case, inner periods kept, final period dropped) after which a period ends no sentence."""

# A candidate end: . ! ? (possibly repeated, e.g. "?!" or "..."), then closing quotes or brackets.
_END = re.compile(r"[.!?]+[\"'\u2019\u201d)\]]*")
_WORD_BEFORE = re.compile(r"([A-Za-z][A-Za-z.]*)$")
_LIST_MARKER = re.compile(r"^\s*(?:\d{1,3}|[A-Za-z])[.)]$")
_SOFT_BREAK = re.compile(r"[,;:](?=\s)")


def _is_boundary(line: str, start: int, end: int) -> bool:
    """Whether the punctuation run line[start:end] ends a sentence."""
    after = line[end:]
    if not after:
        return True
    if not after[0].isspace():
        return False  # 3.5, e.g.x, "a.b": no space, no boundary
    nxt = after.lstrip()
    if not nxt:
        return True
    if line[start] == "." and end - start == 1:
        before = line[:start]
        if _LIST_MARKER.match(line[:end]):
            return False  # "1. First step": a list marker, not a sentence
        word = _WORD_BEFORE.search(before)
        if word:
            w = word.group(1).lower()
            if w in ABBREVIATIONS and not (w == "etc" and nxt[0].isupper()):
                return False
            if len(w) == 1 and word.group(1).isupper():
                return False  # an initial: "J. Smith"
    # A sentence starts with a capital, a digit, a quote, a bracket, a currency sign or a list mark.
    return nxt[0].isupper() or nxt[0].isdigit() or nxt[0] in "\"'\u201c\u2018([$\u20ac\u00a3-*\u2022#"


def _split_line(line: str) -> list[str]:
    """Sentences of one line (no newline inside); leading spaces stay with the following sentence."""
    out, begin = [], 0
    for m in _END.finditer(line):
        if m.end() > begin and _is_boundary(line, m.start(), m.end()):
            out.append(line[begin:m.end()])
            begin = m.end()
    if begin < len(line):
        if out and not line[begin:].strip():
            out[-1] += line[begin:]  # trailing spaces close the last sentence
        else:
            out.append(line[begin:])
    return out


def split_long(sentence: str, max_chars: int) -> list[str]:
    """Splits a sentence longer than `max_chars` after commas / semicolons / colons followed by a space.

    Greedy: each piece extends to the last soft break that keeps it within `max_chars` (or to the
    first soft break if none does). A sentence without soft breaks stays whole.
    """
    if len(sentence) <= max_chars:
        return [sentence]
    out, begin = [], 0
    breaks = [m.end() for m in _SOFT_BREAK.finditer(sentence)]
    while len(sentence) - begin > max_chars:
        fitting = [b for b in breaks if begin < b <= begin + max_chars and sentence[b:].strip()]
        later = [b for b in breaks if b > begin + max_chars and sentence[b:].strip()]
        cut = fitting[-1] if fitting else (later[0] if later else None)
        if cut is None:
            break
        out.append(sentence[begin:cut])
        begin = cut
    out.append(sentence[begin:])
    return out


def rule_splitter(text: str, *, max_chars: int = 200) -> list[str]:
    """Rule-based sentences: every line is split apart (newlines open the next sentence), and lines
    at . ! ? followed by a space and a sentence start, except after abbreviations (Dr., e.g., i.e.),
    initials and list markers ("1."); decimals and amounts (3.5, $1,000.50) never split. Sentences
    longer than `max_chars` are split further at commas, semicolons and colons.
    Empty or whitespace-only text gives [text] if non-empty, else [].
    """
    if not text:
        return []
    pieces: list[str] = []
    pending = ""  # newlines and blank lines, prepended to the next sentence
    for i, line in enumerate(text.split("\n")):
        if i:
            pending += "\n"
        if not line.strip():
            pending += line
            continue
        sentences = _split_line(line)
        sentences[0] = pending + sentences[0]
        pending = ""
        for s in sentences:
            pieces.extend(split_long(s, max_chars))
    if pending:
        if pieces:
            pieces[-1] += pending
        else:
            pieces.append(pending)
    return pieces


def line_splitter(text: str) -> list[str]:
    """One sentence per non-empty line (GSM8K-style worked solutions, bullet lists)."""
    if not text:
        return []
    parts = re.split(r"(?<=[^\n])(?=\n+[^\n]*\S)", text)
    return [p for p in parts if p]


SPLITTERS: dict[str, Splitter] = {"rules": rule_splitter, "lines": line_splitter}


def register_splitter(name: str, fn: Splitter) -> None:
    """Adds a splitter `text -> sentences` (which must concatenate back to the text) under `name`."""
    SPLITTERS[name] = fn


def get_splitter(name: str) -> Splitter:
    """The registered splitter called `name`."""
    if name not in SPLITTERS:
        raise KeyError(f"unknown sentence splitter {name!r}; registered: {sorted(SPLITTERS)}")
    return SPLITTERS[name]


def split_sentences(text: str, splitter: str | Splitter = "rules") -> list[str]:
    """Sentences of `text` by a registered splitter (or a callable), checked to cover the text exactly."""
    fn = get_splitter(splitter) if isinstance(splitter, str) else splitter
    out = fn(text)
    if "".join(out) != text:
        raise ValueError(f"splitter {splitter!r} lost or changed characters: {out!r} do not join to {text!r}")
    return out
