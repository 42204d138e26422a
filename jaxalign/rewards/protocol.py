"""The reward protocol: every reward function, outcome or model-based, has one shape.

A reward function maps a batch of B trajectories (`jaxalign.rollout.types.Trajectory`) to per-token
rewards, a float32 array [B, T] over the RESPONSE tokens, token-aligned: `r[b, j]` is the reward of
response token j of trajectory b (`trajs[b].tokens[j]`), T is the longest response, and positions
past a response's end are zero. What a function needs beyond the token ids comes by keyword:
`prompts` (the user messages the trajectories answer, as text) and `answers` (their reference
answers); each implementation says which it reads.

    outcome     (OutcomeReward)     the verifier's score on the last response token
    endogenous  (EndogenousReward)  r_t from a reward LM on policy tokens, 0 on tool-output tokens
    sentence    (SentenceReward)    a trained sentence RM's s_k on the token where sentence k ends

GRPO turns these rows into advantages (`jaxalign.rl.advantages.token_advantages`) and the batch
builder moves them to target alignment (`jaxalign.rl.batch`, `jaxalign.train.targets`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from jaxalign.rollout.types import Trajectory


class RewardFunction(Protocol):
    """`(trajs, *, prompts=None, answers=None) -> rewards [B, T]` float32 (module docstring)."""

    def __call__(self, trajs: Sequence[Trajectory], *, prompts: Sequence[str] | None = None,
                 answers: Sequence[str] | None = None) -> np.ndarray: ...


def response_rewards(trajs: Sequence[Trajectory], rewards: Sequence[np.ndarray]) -> np.ndarray:
    """Stacks one reward array per trajectory (len(tokens) each) into [B, T], zero-padded."""
    if len(rewards) != len(trajs):
        raise ValueError(f"{len(rewards)} reward rows for {len(trajs)} trajectories")
    out = np.zeros((len(trajs), max((len(t.tokens) for t in trajs), default=0)), np.float32)
    for b, (t, r) in enumerate(zip(trajs, rewards)):
        r = np.asarray(r, np.float32)
        if r.shape != (len(t.tokens),):
            raise ValueError(f"trajectory {b}: {r.size} rewards for {len(t.tokens)} response tokens")
        out[b, :r.size] = r
    return out


def per_trajectory(rewards_BT: np.ndarray, trajs: Sequence[Trajectory]) -> list[np.ndarray]:
    """[B, T] -> one float32 array per trajectory over its own response tokens (padding dropped)."""
    return [np.asarray(rewards_BT[b, :len(t.tokens)], np.float32) for b, t in enumerate(trajs)]


def last_token_rewards(trajs: Sequence[Trajectory], values: Sequence[float]) -> np.ndarray:
    """[B, T] with `values[b]` on the last response token of trajectory b (an empty response gets none)."""
    out = response_rewards(trajs, [np.zeros(len(t.tokens), np.float32) for t in trajs])
    for b, (t, v) in enumerate(zip(trajs, values)):
        if t.tokens:
            out[b, len(t.tokens) - 1] = float(v)
    return out


def _require(name: str, values, trajs) -> Sequence[str]:
    if values is None or len(values) != len(trajs):
        got = "none" if values is None else len(values)
        raise ValueError(f"this reward needs `{name}`, one per trajectory: {len(trajs)} trajectories, {got} {name}")
    return values


class OutcomeReward:
    """A verifier's outcome reward (`jaxalign.rewards.verify`) on the last response token.

    Reads `answers`; the verified text is the policy text after the last tool output
    (`Trajectory.final_text`), or the whole response when it has none.
    """

    def __init__(self, verifier: str = "strict"):
        from jaxalign.rewards.verify import get_reward

        self.verifier = get_reward(verifier) if isinstance(verifier, str) else verifier

    def __call__(self, trajs: Sequence[Trajectory], *, prompts: Sequence[str] | None = None,
                 answers: Sequence[str] | None = None) -> np.ndarray:
        answers = _require("answers", answers, trajs)
        return last_token_rewards(trajs, [self.verifier(t.final_text or t.text, a) for t, a in zip(trajs, answers)])


class EndogenousReward:
    """The endogenous reward r_t (`jaxalign.rewards.endogenous`) of a reward LM on each policy token.

    The LM scores exactly the sampled ids (prompt + response); tool-output tokens (loss_mask 0) get
    0, the policy did not choose them. Reads neither prompts nor answers.
    """

    def __init__(self, scorer):
        self.scorer = scorer
        """A `jaxalign.rewards.endo_scorer.EndogenousScorer` (the LM must embed the policy's vocabulary)."""

    def __call__(self, trajs: Sequence[Trajectory], *, prompts: Sequence[str] | None = None,
                 answers: Sequence[str] | None = None) -> np.ndarray:
        if not trajs:
            return np.zeros((0, 0), np.float32)
        endo = self.scorer.token_rewards_ids([(t.prompt_tokens + t.tokens, len(t.prompt_tokens)) for t in trajs])
        rows = []
        for t, r in zip(trajs, endo):
            if len(r) != len(t.tokens):
                raise RuntimeError(f"reward LM scored {len(r)} tokens of a {len(t.tokens)}-token response")
            rows.append(np.asarray(r, np.float64) * np.asarray(t.loss_mask, np.float64))
        return response_rewards(trajs, rows)
