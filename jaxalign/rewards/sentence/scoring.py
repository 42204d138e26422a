"""Host-side scoring with a trained sentence-level reward model: response scores, sentence rewards,
and dense per-token rewards for RL (s_k on the last token of sentence k, s_0 dropped)."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from jaxalign import sharding
from jaxalign.rewards.endo_scorer import round_up
from jaxalign.rewards.sentence.aggregate import dense_sentence_rewards
from jaxalign.rewards.sentence.encode import encode_with_ends, pad_ends, pad_rows
from jaxalign.rewards.sentence.model import SentenceRewardModel
from jaxalign.rewards.sentence.splitter import Splitter


def sentence_scorer(rm: SentenceRewardModel, *, use_attention: bool = True, use_rope: bool = True,
                    rope_theta: float = 10000.0, mesh: Mesh | None = None,
                    rules: sharding.Rules = sharding.ROLLOUT_RULES):
    """`(ids, mask, positions, valid) -> (scores [B], sentence rewards [B, E])`, compiled once under
    `mesh` (None: one device) with the parameters placed by `rules` and rows split over its data axes."""
    from jaxalign.train.run import compile_scorer

    graphdef, state = nnx.split(rm)

    def fn(st, b):
        return nnx.merge(graphdef, st)(*b, use_attention=use_attention, use_rope=use_rope, rope_theta=rope_theta)

    run = compile_scorer(fn, state, mesh, rules)
    return lambda ids, mask, pos, valid: run((ids, mask, pos, valid))


def score_sentences(rm: SentenceRewardModel, tokenizer, end_id: int, prompts: Sequence[str], responses: Sequence[str],
                    *, splitter: str | Splitter = "rules", system_prompt: str | None = None, use_attention: bool = True,
                    use_rope: bool = True, rope_theta: float = 10000.0, batch_size: int = 8, scorer=None) -> list[dict]:
    """For each (prompt, response): {"score": R, "sentence_rewards": s_1..s_n (one per sentence, then the
    end-of-turn slot), "dense": per-token rewards over the response tokens (EOS included, END removed),
    "sentences"}. `dense` sums to sum_{k>=1} s_k = v_last - v_0 and is zero off the sentence ends.
    `scorer` (from `sentence_scorer`, compiled once) is built from `rm` and the options when not given.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    encoded = [encode_with_ends(tokenizer, p, r, end_id=end_id, splitter=splitter, system_prompt=system_prompt)
               for p, r in zip(prompts, responses)]
    fn = scorer or sentence_scorer(rm, use_attention=use_attention, use_rope=use_rope, rope_theta=rope_theta)
    dense_fn = jax.jit(dense_sentence_rewards, static_argnums=(3,))
    out: list[dict] = []
    for s in range(0, len(encoded), batch_size):
        rows = encoded[s:s + batch_size]
        rows = rows + [rows[-1]] * (batch_size - len(rows))  # one compiled shape per length bucket
        ids, mask = pad_rows([e.ids for e in rows], round_up(max(len(e.ids) for e in rows), 64))
        pos, valid = pad_ends(rows, round_up(max(e.num_ends for e in rows), 8))
        r, sent = jax.device_get(fn(ids, mask, pos, valid))
        # token_ends[k - 1] is where sentence k's reward goes; slot 0 (the prompt) is dropped.
        ends = np.zeros_like(pos)
        for j, e in enumerate(rows):
            ends[j, 1:e.num_ends] = e.token_ends
        length = round_up(max(int(e.token_ends[-1]) + 1 for e in rows), 64)
        dense = np.asarray(dense_fn(sent, ends, valid, length))
        for j, e in enumerate(rows[:min(batch_size, len(encoded) - s)]):
            n_tokens = int(e.token_ends[-1]) + 1
            out.append({"score": float(r[j]), "sentence_rewards": np.asarray(sent[j, 1:e.num_ends]),
                        "dense": dense[j, :n_tokens], "sentences": e.sentences})
    return out
