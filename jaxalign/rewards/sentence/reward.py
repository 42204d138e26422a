"""A trained sentence-level reward model as a reward function of the protocol (`jaxalign.rewards.protocol`).

The RM scores text with its own tokenizer and END tokens (`score_sentences`), so the policy may use
another vocabulary. For each trajectory:

1. The response text is the concatenation of the policy tokenizer's per-token decoded pieces
   (`jaxalign.tokenizer.token_pieces`), tool output included, a final end-of-turn token excluded
   (the RM appends its own). Piece i ends at character offset `cum[i]` of that text.
2. The RM splits it into sentences (its run's splitter; they concatenate to the text) and scores
   prompt + response: s_1 .. s_n, then the end-of-turn slot; s_0 (the prompt) is dropped.
3. Placement: s_k goes on the policy token whose piece holds sentence k's last character (the first
   i with cum[i] >= end of sentence k); the end-of-turn slot goes on the last response token. When
   that token is a tool-output token (loss_mask 0) the reward moves to the nearest *preceding*
   policy token (the last decision before the sentence ended), or the nearest following one when
   the response opens with tool output; a response without any policy token gets no reward.
   Sentences landing on the same token add up. Sentences the RM tokenizer encodes to no token get
   no END (as in `encode_with_ends`) and no reward.

The rewards of a response therefore sum to sum_{k>=1} s_k = v_last - v_0 (`scoring.py`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxalign.rewards.protocol import response_rewards
from jaxalign.rewards.sentence.encode import text_ids
from jaxalign.rewards.sentence.scoring import score_sentences, sentence_scorer
from jaxalign.rewards.sentence.splitter import split_sentences
from jaxalign.rollout.types import Trajectory
from jaxalign.tokenizer import token_pieces


def _policy_token(loss_mask: Sequence[int], i: int) -> int | None:
    """Token i if it is a policy token, else the nearest preceding (then following) policy token."""
    if loss_mask[i]:
        return i
    for j in list(range(i - 1, -1, -1)) + list(range(i + 1, len(loss_mask))):
        if loss_mask[j]:
            return j
    return None


class SentenceReward:
    """Sentence rewards of a trained sentence RM on the policy tokens where the sentences end.

    Reads `prompts` (the user messages, rendered with the RM's own chat template and system prompt).
    The RM's scoring pass compiles once, under `mesh` (None: one device), rows split over its data axes.
    """

    def __init__(self, rm, rm_tokenizer, end_id: int, policy_tokenizer, *, splitter: str = "rules",
                 system_prompt: str | None = None, use_attention: bool = True, use_rope: bool = True,
                 rope_theta: float = 10000.0, batch_size: int = 8, mesh=None):
        self.rm, self.rm_tokenizer, self.end_id, self.policy_tokenizer = rm, rm_tokenizer, end_id, policy_tokenizer
        self.splitter, self.system_prompt, self.batch_size = splitter, system_prompt, batch_size
        self.options = {"use_attention": use_attention, "use_rope": use_rope, "rope_theta": rope_theta}
        self.scorer = sentence_scorer(rm, **self.options, mesh=mesh)  # compiled once, reused every step

    def response_text(self, traj: Trajectory) -> tuple[str, np.ndarray]:
        """(the text the RM scores, cum [len(tokens)]: the end offset in it of each token's piece)."""
        pieces = token_pieces(self.policy_tokenizer, traj.tokens)
        if traj.tokens and traj.tokens[-1] == self.policy_tokenizer.eos_token_id:
            pieces[-1] = ""  # the RM appends its own end-of-turn token
        return "".join(pieces), np.cumsum([len(p) for p in pieces], dtype=np.int64)

    def end_tokens(self, traj: Trajectory) -> list[int | None]:
        """The response token each sentence reward s_1 .. s_n, end-of-turn goes on (module docstring)."""
        text, cum = self.response_text(traj)
        out, end = [], 0
        for s in split_sentences(text, self.splitter):
            end += len(s)
            if text_ids(self.rm_tokenizer, s):  # a sentence without tokens gets no END
                out.append(_policy_token(traj.loss_mask, int(np.searchsorted(cum, end))))
        out.append(_policy_token(traj.loss_mask, len(traj.tokens) - 1))
        return out

    def __call__(self, trajs: Sequence[Trajectory], *, prompts: Sequence[str] | None = None,
                 answers: Sequence[str] | None = None) -> np.ndarray:
        if prompts is None or len(prompts) != len(trajs):
            raise ValueError(f"the sentence reward needs the prompt (user message) of each of the {len(trajs)} "
                             "trajectories")
        if any(not t.tokens for t in trajs):
            raise ValueError("a trajectory has no response token to carry a sentence reward")
        texts = [self.response_text(t)[0] for t in trajs]
        scored = score_sentences(self.rm, self.rm_tokenizer, self.end_id, prompts, texts, splitter=self.splitter,
                                 system_prompt=self.system_prompt, batch_size=self.batch_size, scorer=self.scorer,
                                 **self.options)
        rows = []
        for b, (t, s) in enumerate(zip(trajs, scored)):
            ends = self.end_tokens(t)
            if len(ends) != len(s["sentence_rewards"]):
                raise RuntimeError(f"trajectory {b}: {len(s['sentence_rewards'])} sentence rewards for "
                                   f"{len(ends)} sentence ends")
            r = np.zeros(len(t.tokens), np.float64)
            for i, v in zip(ends, s["sentence_rewards"]):
                if i is not None:
                    r[i] += float(v)
            rows.append(r)
        return response_rewards(trajs, rows)
