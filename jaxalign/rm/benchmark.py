"""A preference benchmark built offline from GSM8K worked solutions.

Chosen: a problem's worked solution (calculator annotations removed) closed by "The answer is N.".
Rejected: the same text with exactly one sentence made wrong, by one of three corruption kinds
(the pair's `category`):

* "result": the result of one equation is wrong ("16 - 3 - 4 = 9" -> "16 - 3 - 4 = 11");
* "operand": one operand of an equation is wrong ("16 - 3 - 4 = 9" -> "16 - 5 - 4 = 9");
* "final_answer": the final "The answer is N." states a wrong N.

Later sentences are left as they were, so the error is local: `meta["wrong_sentence"]` is the
index (among the sentences of the default splitter) of the corrupted sentence, the ground truth
for localisation. Everything is deterministic given the seed and independent of input order.
Users can bring their own pairs as JSONL (`jaxalign.data.read_jsonl(path, "preferences")`).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from jaxalign.data import MathProblem, PreferencePair, split_problems
from jaxalign.rewards.sentence.splitter import Splitter, split_sentences

KINDS = ("result", "operand", "final_answer")
_CALCULATOR = re.compile(r"<<[^<>]*>>")
_NUM = r"\d+(?:,\d{3})*(?:\.\d+)?"
_OPERAND = rf"\(?\$?{_NUM}%?\)?"
# An equation: operands joined by arithmetic operators, "=", then the result (optionally in dollars).
_EQUATION = re.compile(rf"(?P<lhs>{_OPERAND}(?:\s*[-+*/x\u00d7\u00f7]\s*{_OPERAND})+)\s*=\s*\$?(?P<rhs>{_NUM})")
_NUMBER = re.compile(_NUM)


def gsm8k_response(problem: MathProblem) -> str:
    """The reference response: the worked solution without calculator annotations, then the answer."""
    if problem.solution is None:
        raise ValueError(f"problem {problem.id} has no worked solution")
    return _CALCULATOR.sub("", problem.solution).strip() + f"\nThe answer is {problem.answer}."


def wrong_number(text: str, rng: random.Random) -> str:
    """A different, plausible number formatted like `text` (decimals and thousands separators kept)."""
    decimals = len(text.split(".")[1]) if "." in text else 0
    scale = 10**decimals
    value = round(float(text.replace(",", "")) * scale)  # integer in units of the last decimal place
    candidates = {value + d * scale for d in (-3, -2, -1, 1, 2, 3, 5, 10)} | {value * 2, value * 10}
    if decimals:
        candidates |= {value + d for d in (-5, -1, 1, 5)}
    if value >= 10 * scale:
        candidates |= {value // 10, value + 10 * scale * rng.choice((-1, 1))}
    digits = str(value)
    if len(digits) >= 2 and digits[-1] != digits[-2]:
        candidates.add(int(digits[:-2] + digits[-1] + digits[-2]))
    pool = sorted(c for c in candidates if c != value and c >= 0)
    new = rng.choice(pool)
    whole, frac = divmod(new, scale)
    out = f"{whole:,}" if "," in text else str(whole)
    return out + (f".{frac:0{decimals}d}" if decimals else "")


def _replace(text: str, start: int, end: int, new: str) -> str:
    return text[:start] + new + text[end:]


def corrupt_sentence(sentence: str, kind: str, rng: random.Random) -> str | None:
    """`sentence` with one number made wrong by `kind`, or None when the kind does not apply."""
    if kind == "final_answer":
        m = list(_NUMBER.finditer(sentence))
        if not m:
            return None
        last = m[-1]
        return _replace(sentence, last.start(), last.end(), wrong_number(last.group(), rng))
    equations = list(_EQUATION.finditer(sentence))
    if not equations:
        return None
    eq = rng.choice(equations)
    if kind == "result":
        return _replace(sentence, eq.start("rhs"), eq.end("rhs"), wrong_number(eq.group("rhs"), rng))
    if kind == "operand":
        operand = rng.choice(list(_NUMBER.finditer(eq.group("lhs"))))
        at = eq.start("lhs")
        return _replace(sentence, at + operand.start(), at + operand.end(), wrong_number(operand.group(), rng))
    raise ValueError(f"unknown corruption kind {kind!r}; known: {KINDS}")


def corrupt_response(response: str, kind: str, rng: random.Random,
                     splitter: str | Splitter = "rules") -> tuple[str, int] | None:
    """(rejected text, index of the corrupted sentence), or None when `kind` fits no sentence.

    "final_answer" corrupts the last sentence; "result" and "operand" one sentence, chosen by `rng`,
    among those holding an equation (the final-answer sentence excluded).
    """
    sentences = split_sentences(response, splitter)
    if kind == "final_answer":
        eligible = [len(sentences) - 1]
    else:
        eligible = [i for i, s in enumerate(sentences[:-1]) if _EQUATION.search(s)]
    if not eligible:
        return None
    index = rng.choice(eligible)
    new = corrupt_sentence(sentences[index], kind, rng)
    if new is None or new == sentences[index]:
        return None
    rejected = "".join(sentences[:index] + [new] + sentences[index + 1:])
    if split_sentences(rejected, splitter) != sentences[:index] + [new] + sentences[index + 1:]:
        return None  # the edit moved a sentence boundary: the location would be ambiguous
    return rejected, index


def build_gsm8k_preferences(problems: Sequence[MathProblem], *, seed: int = 0, kinds: Sequence[str] = KINDS,
                            splitter: str | Splitter = "rules") -> list[PreferencePair]:
    """One pair per (problem, kind) where the kind applies, in problem order.

    `meta` holds problem_id, wrong_sentence (the corrupted sentence's index), num_sentences, and the
    original and corrupted sentence texts.
    """
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown corruption kinds {unknown}; known: {list(KINDS)}")
    pairs = []
    for problem in problems:
        chosen = gsm8k_response(problem)
        sentences = split_sentences(chosen, splitter)
        for kind in kinds:
            rng = random.Random(f"{seed}/{problem.id}/{kind}")  # string seeds are stable across runs
            made = corrupt_response(chosen, kind, rng, splitter)
            if made is None:
                continue
            rejected, index = made
            meta = {"problem_id": problem.id, "wrong_sentence": index, "num_sentences": len(sentences),
                    "original": sentences[index], "corrupted": split_sentences(rejected, splitter)[index]}
            pairs.append(PreferencePair(id=f"{problem.id}-{kind}", prompt=problem.question, chosen=chosen,
                                        rejected=rejected, category=kind, meta=meta))
    return pairs


def gsm8k_benchmark(*, test_fraction: float = 0.2, seed: int = 0, kinds: Sequence[str] = KINDS,
                    problems: Sequence[MathProblem] | None = None) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """(train, test) pairs, split by problem (no problem on both sides); default: all 1,319 GSM8K problems."""
    if problems is None:
        from jaxalign.data import load_gsm8k

        problems = load_gsm8k(strip_calculator=True)
    train, test = split_problems(problems, test_fraction, seed)
    return build_gsm8k_preferences(train, seed=seed, kinds=kinds), build_gsm8k_preferences(test, seed=seed, kinds=kinds)
