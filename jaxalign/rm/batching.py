"""Preference pairs to padded pair batches for the sentence-level and response-level reward models."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np

from jaxalign.data import PreferencePair
from jaxalign.rewards.endo_scorer import round_up
from jaxalign.rewards.sentence.encode import EncodedResponse, encode_plain, encode_with_ends, pad_ends, pad_rows
from jaxalign.rewards.sentence.splitter import Splitter

log = logging.getLogger(__name__)

Kind = Literal["sentence", "response"]


@dataclasses.dataclass
class EncodedPairs:
    """Encoded (chosen, rejected) rows of the pairs that fit, aligned with `pairs`."""

    kind: Kind
    pairs: list[PreferencePair]
    rows: list[tuple[EncodedResponse, EncodedResponse]]

    def __len__(self) -> int:
        return len(self.pairs)


def encode_pairs(pairs: Sequence[PreferencePair], tokenizer, *, kind: Kind, end_id: int | None = None,
                 splitter: str | Splitter = "rules", system_prompt: str | None = None,
                 max_len: int = 512) -> EncodedPairs:
    """Encodes each pair's two responses; pairs with a side longer than `max_len` tokens are dropped
    (with a warning): a truncated response would lose the sentences that decide the preference.

    The sentence model gets END tokens (`end_id` required); the response model the plain text.
    """
    if kind == "sentence" and end_id is None:
        raise ValueError("the sentence model needs end_id (see with_end_token)")

    def enc(prompt: str, response: str) -> EncodedResponse:
        if kind == "sentence":
            return encode_with_ends(tokenizer, prompt, response, end_id=end_id, splitter=splitter,
                                    system_prompt=system_prompt)
        ids = encode_plain(tokenizer, prompt, response, system_prompt=system_prompt)
        return EncodedResponse(ids, np.zeros((0,), np.int32), np.zeros((0,), np.int32), ())

    kept, rows = [], []
    for p in pairs:
        c, r = enc(p.prompt, p.chosen), enc(p.prompt, p.rejected)
        if max(len(c.ids), len(r.ids)) <= max_len:
            kept.append(p)
            rows.append((c, r))
    if len(kept) < len(pairs):
        log.warning("dropped %d of %d pairs longer than max_len=%d tokens", len(pairs) - len(kept), len(pairs), max_len)
    return EncodedPairs(kind, kept, rows)


def make_batch(encoded: EncodedPairs, indices: Sequence[int], *, pairs_per_batch: int, length_multiple: int = 64,
               ends_multiple: int = 8, pad_id: int = 0) -> dict[str, np.ndarray]:
    """A pair batch (see `jaxalign.rm.step`) of `indices`, padded to `pairs_per_batch` pairs.

    Lengths round up to `length_multiple` tokens and `ends_multiple` END slots, so a run compiles
    one step per bucket. Padding pairs have all-zero masks and `pair_weight` 0.
    """
    if len(indices) > pairs_per_batch:
        raise ValueError(f"{len(indices)} pairs do not fit a batch of {pairs_per_batch}")
    rows = [side for i in indices for side in encoded.rows[i]]
    t = round_up(max(len(r.ids) for r in rows), length_multiple)
    ids, mask = pad_rows([r.ids for r in rows], t, pad_id)
    p = pairs_per_batch
    out = {"input_ids": np.full((p * 2, t), pad_id, np.int32), "attention_mask": np.zeros((p * 2, t), np.int32)}
    out["input_ids"][:len(rows)], out["attention_mask"][:len(rows)] = ids, mask
    if encoded.kind == "sentence":
        n = round_up(max(r.num_ends for r in rows), ends_multiple)
        pos, valid = pad_ends(rows, n)
        out["end_positions"] = np.zeros((p * 2, n), np.int32)
        out["end_valid"] = np.zeros((p * 2, n), bool)
        out["end_positions"][:len(rows)], out["end_valid"][:len(rows)] = pos, valid
    out = {k: v.reshape((p, 2) + v.shape[1:]) for k, v in out.items()}
    out["pair_weight"] = (np.arange(p) < len(indices)).astype(np.float32)
    return out


def eval_order(encoded: EncodedPairs) -> list[int]:
    """Pair indices sorted by length (longest side): batches of similar lengths waste little padding."""
    return sorted(range(len(encoded)), key=lambda i: max(len(s.ids) for s in encoded.rows[i]))
