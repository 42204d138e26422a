"""The GSM8K preference benchmark (one corrupted sentence per rejected response) and its metrics."""

import random
import re

import numpy as np
import pytest

from jaxalign.data import MathProblem
from jaxalign.rewards.sentence.splitter import split_sentences
from jaxalign.rm.benchmark import (
    KINDS,
    build_gsm8k_preferences,
    corrupt_sentence,
    gsm8k_benchmark,
    gsm8k_response,
    wrong_number,
)
from jaxalign.rm.evaluation import localisation, pair_correct, pairwise_accuracy

PROBLEMS = [
    MathProblem(id="p0", question="Eggs?", answer="18", source="gsm8k",
                solution="Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\n"
                         "She makes 9 * 2 = $<<9*2=18>>18 every day."),
    MathProblem(id="p1", question="Rope?", answer="1,250.5", source="gsm8k",
                solution="The rope is 2.5 * 500 = 1,250 cm. Dr. Lee adds 0.5 cm.\nSo 1,250 + 0.5 = 1,250.5 cm."),
    MathProblem(id="p2", question="Words?", answer="7", source="gsm8k", solution="There are seven words here."),
]


def test_reference_response_drops_calculator_annotations():
    text = gsm8k_response(PROBLEMS[0])
    assert "<<" not in text and text.endswith("\nThe answer is 18.")
    assert text.startswith("Janet sells 16 - 3 - 4 = 9 duck eggs a day.")


def test_each_rejected_response_has_exactly_the_recorded_sentence_wrong():
    pairs = build_gsm8k_preferences(PROBLEMS, seed=3)
    kinds = {(p.meta["problem_id"], p.category) for p in pairs}
    # p2 has no equation: only its final answer can be corrupted.
    assert kinds == {("p0", k) for k in KINDS} | {("p1", k) for k in KINDS} | {("p2", "final_answer")}
    for p in pairs:
        good, bad = split_sentences(p.chosen), split_sentences(p.rejected)
        assert len(good) == len(bad) == p.meta["num_sentences"]
        diff = [i for i, (a, b) in enumerate(zip(good, bad)) if a != b]
        assert diff == [p.meta["wrong_sentence"]]
        assert bad[diff[0]] == p.meta["corrupted"] and good[diff[0]] == p.meta["original"]
        if p.category == "final_answer":
            assert diff[0] == len(good) - 1
        else:
            assert diff[0] < len(good) - 1 and "=" in good[diff[0]]
    assert build_gsm8k_preferences(PROBLEMS[::-1], seed=3)[::-1][0].rejected in {p.rejected for p in pairs}
    assert [p.rejected for p in build_gsm8k_preferences(PROBLEMS, seed=3)] == [p.rejected for p in pairs]


def test_corruption_kinds_change_the_right_number():
    rng = random.Random(0)
    s = "Janet sells 16 - 3 - 4 = 9 duck eggs a day."
    for _ in range(20):
        m = re.search(r"(\d+) - (\d+) - (\d+) = (\d+)", corrupt_sentence(s, "result", rng))
        assert m.groups()[:3] == ("16", "3", "4") and m.group(4) != "9"
        m = re.search(r"(\d+) - (\d+) - (\d+) = (\d+)", corrupt_sentence(s, "operand", rng))
        assert m.group(4) == "9" and m.groups()[:3] != ("16", "3", "4")
    assert corrupt_sentence("No equation here.", "result", rng) is None
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt_sentence(s, "units", rng)
    with pytest.raises(ValueError, match="unknown corruption"):
        build_gsm8k_preferences(PROBLEMS, kinds=("units",))


def test_wrong_numbers_keep_the_format():
    rng = random.Random(1)
    for text in ("9", "1,250", "2.5", "1,250.75", "100"):
        for _ in range(10):
            new = wrong_number(text, rng)
            assert new != text and float(new.replace(",", "")) >= 0
            decimals = [len(x.split(".")[1]) if "." in x else 0 for x in (new, text)]
            assert decimals[0] == decimals[1] and ("," in new) <= ("," in text)


def test_full_benchmark_is_split_by_problem():
    train, test = gsm8k_benchmark()
    assert len(train) > 2000 and len(test) > 500
    train_ids = {p.meta["problem_id"] for p in train}
    assert not train_ids & {p.meta["problem_id"] for p in test}
    assert {p.category for p in test} == set(KINDS)


def test_pairwise_accuracy_and_localisation_hand_computed():
    np.testing.assert_array_equal(pair_correct([2, 1, 1], [1, 1, 3]), [1.0, 0.5, 0.0])
    out = pairwise_accuracy([2, 1, 1, 5], [1, 1, 3, 0], ["a", "a", "b", "b"])
    assert out["accuracy"] == pytest.approx(2.5 / 4) and out["n"] == 4
    assert out["by_category"] == {"a": {"accuracy": 0.75, "n": 2}, "b": {"accuracy": 0.5, "n": 2}}
    loc = localisation([np.array([0.1, -2.0, 0.3]), np.array([1.0, 0.5]), np.array([3.0, 2.0, 1.0, 0.0])], [1, 0, 3])
    assert loc["localisation"] == pytest.approx(2 / 3)
    assert loc["localisation_chance"] == pytest.approx((1 / 3 + 1 / 2 + 1 / 4) / 3)
    with pytest.raises(ValueError, match="outside"):
        localisation([np.array([1.0])], [2])
