"""Reward-model evaluation on preference pairs: pairwise accuracy per category, and localisation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def pair_correct(chosen_N: np.ndarray, rejected_N: np.ndarray) -> np.ndarray:
    """1 where chosen scores above rejected, 0.5 on a tie, 0 below: [N].

    Ties count half so that a constant scorer sits exactly at chance (0.5), not at 0.
    """
    c, r = np.asarray(chosen_N, np.float64), np.asarray(rejected_N, np.float64)
    return (c > r) + 0.5 * (c == r)


def pairwise_accuracy(chosen_N: Sequence[float], rejected_N: Sequence[float],
                      categories: Sequence[str] | None = None) -> dict[str, Any]:
    """{"accuracy", "n", "by_category": {category: {"accuracy", "n"}}} over N pairs."""
    correct = pair_correct(np.asarray(chosen_N), np.asarray(rejected_N))
    cats = np.asarray(list(categories) if categories is not None else ["default"] * len(correct))
    if len(cats) != len(correct):
        raise ValueError(f"{len(cats)} categories for {len(correct)} pairs")
    out: dict[str, Any] = {"accuracy": float(correct.mean()) if len(correct) else float("nan"), "n": len(correct)}
    out["by_category"] = {str(c): {"accuracy": float(correct[cats == c].mean()), "n": int((cats == c).sum())}
                          for c in sorted(set(cats.tolist()))}
    return out


def localisation(sentence_rewards: Sequence[np.ndarray], wrong_sentence: Sequence[int]) -> dict[str, float]:
    """How often the lowest sentence reward falls on the corrupted sentence.

    `sentence_rewards[i]` holds s_1..s_n of response i's n sentences (s_0, the prompt slot, and the
    end-of-turn slot removed); `wrong_sentence[i]` is the 0-based index of the corrupted one.
    Returns the hit rate, the chance rate (mean of 1 / n) and the count.
    """
    hits, chance = [], []
    for s, w in zip(sentence_rewards, wrong_sentence):
        s = np.asarray(s)
        if not 0 <= w < len(s):
            raise ValueError(f"wrong sentence {w} outside the {len(s)} sentences")
        hits.append(float(int(np.argmin(s)) == int(w)))
        chance.append(1.0 / len(s))
    n = len(hits)
    return {"localisation": float(np.mean(hits)) if n else float("nan"),
            "localisation_chance": float(np.mean(chance)) if n else float("nan"), "localisation_n": n}
