"""`<END>` tokens: the tokenizer and embedding extension, and encoding (prompt, response) with them.

Layout of an encoded response with n sentences (N = n + 2 END tokens, positions p_0 < ... < p_{n+1}):

    [chat-template prompt] END  sentence_1 END  sentence_2 END ... sentence_n END  EOS END
                           p_0             p_1            p_2              p_n      p_{n+1}

END follows the prompt, every sentence, and the response's end-of-turn token (EOS), so the
stopping decision is the last "sentence". END ids are inserted between separately tokenised
pieces, never tokenised from text: END can never merge with a neighbouring token, and a literal
"<END>" in user text is encoded as plain characters.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxalign.models import Transformer, abstract_model
from jaxalign.rewards.sentence.splitter import Splitter, split_sentences

END_TOKEN = "<END>"


def add_end_token(tokenizer) -> int:
    """Adds `<END>` to `tokenizer` as a special token (idempotent) and returns its id."""
    if END_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_tokens([END_TOKEN], special_tokens=True)
    return int(tokenizer.convert_tokens_to_ids(END_TOKEN))


def resize_embeddings(model: Transformer, vocab_size: int) -> Transformer:
    """`model` with `vocab_size` embedding rows (and output-head columns when untied).

    New rows are the mean of the existing ones: a new token then starts at the centre of the
    embedding cloud instead of at a random point whose norm the pretrained layers never saw.
    """
    old = model.config.vocab_size
    if vocab_size < old:
        raise ValueError(f"cannot shrink the vocabulary from {old} to {vocab_size}")
    if vocab_size == old:
        return model
    config = dataclasses.replace(model.config, vocab_size=vocab_size)
    graphdef = nnx.graphdef(abstract_model(config))
    state = nnx.state(model)
    embed = state["embed"].get_value()
    rows = jnp.broadcast_to(embed.mean(axis=0, keepdims=True), (vocab_size - old, embed.shape[1]))
    state["embed"] = state["embed"].replace(jnp.concatenate([embed, rows.astype(embed.dtype)], axis=0))
    if not config.tie_embeddings:
        head = state["lm_head"].get_value()
        cols = jnp.broadcast_to(head.mean(axis=1, keepdims=True), (head.shape[0], vocab_size - old))
        state["lm_head"] = state["lm_head"].replace(jnp.concatenate([head, cols.astype(head.dtype)], axis=1))
    return nnx.merge(graphdef, state)


def with_end_token(model: Transformer, tokenizer) -> tuple[Transformer, int]:
    """Adds `<END>` to the tokenizer and grows the embeddings to cover it; returns (model, END id).

    The END row is the mean of the pretrained rows (`resize_embeddings`): deterministic, a function
    of the checkpoint only. With `RMConfig.freeze_backbone` it never trains, so END reads as an
    "average token" that the pretrained layers contextualise and the heads learn to read; being
    deterministic, a rebuilt frozen backbone equals the trained one (heads-only checkpoints and
    cached features rely on this).
    """
    end_id = add_end_token(tokenizer)
    needed = max(len(tokenizer), end_id + 1)
    if needed > model.config.vocab_size:
        model = resize_embeddings(model, needed)
    return model, end_id


def prompt_ids(tokenizer, prompt: str, system_prompt: str | None = None) -> list[int]:
    """Chat-template ids of [system], user `prompt` and the assistant header.

    A literal "<END>" in the prompt or system text stays plain characters: the template tokenises
    added tokens from text, so any END id it produced is replaced by the characters' ids.
    """
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": prompt})
    ids = list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False))
    end_id = tokenizer.get_vocab().get(END_TOKEN)
    if end_id is None or end_id not in ids:
        return ids
    literal = text_ids(tokenizer, END_TOKEN)
    return [piece for i in ids for piece in (literal if i == end_id else [i])]


def text_ids(tokenizer, text: str) -> list[int]:
    """Plain ids of `text` (no BOS; special-token text such as "<END>" stays ordinary characters)."""
    return list(tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True)) if text else []


@dataclasses.dataclass(frozen=True)
class EncodedResponse:
    """One (prompt, response) with END tokens (see the module docstring)."""

    ids: np.ndarray
    """Token ids [T], END tokens included."""
    end_positions: np.ndarray
    """Positions p_0 < ... < p_{N-1} of the N END tokens in `ids`."""
    token_ends: np.ndarray
    """For END k >= 1: index, among the END-free response tokens (EOS included), of the last token
    before it: where a dense reward for sentence k goes ([N - 1])."""
    sentences: tuple[str, ...]
    """The response's sentences (they concatenate to the response)."""

    @property
    def num_ends(self) -> int:
        """N, the number of END tokens."""
        return len(self.end_positions)


def encode_with_ends(tokenizer, prompt: str, response: str, *, end_id: int, splitter: str | Splitter = "rules",
                     system_prompt: str | None = None) -> EncodedResponse:
    """Encodes a (prompt, response) pair with END after the prompt, each sentence and the EOS."""
    sentences = split_sentences(response, splitter)
    ids = prompt_ids(tokenizer, prompt, system_prompt) + [end_id]
    ends, token_ends, count = [len(ids) - 1], [], 0
    pieces = [text_ids(tokenizer, s) for s in sentences] + [[tokenizer.eos_token_id]]
    for piece in pieces:
        if not piece:
            continue  # a sentence of characters the tokenizer drops: no empty segment
        ids += piece + [end_id]
        ends.append(len(ids) - 1)
        count += len(piece)
        token_ends.append(count - 1)
    return EncodedResponse(np.asarray(ids, np.int32), np.asarray(ends, np.int32), np.asarray(token_ends, np.int32),
                           tuple(sentences))


def encode_plain(tokenizer, prompt: str, response: str, *, system_prompt: str | None = None) -> np.ndarray:
    """The response-level model's input: prompt, response and EOS, without END tokens ([T])."""
    ids = prompt_ids(tokenizer, prompt, system_prompt) + text_ids(tokenizer, response) + [tokenizer.eos_token_id]
    return np.asarray(ids, np.int32)


def pad_rows(rows: Sequence[np.ndarray], length: int, pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded ids [R, length] and attention mask [R, length]."""
    ids = np.full((len(rows), length), pad_id, np.int32)
    mask = np.zeros((len(rows), length), np.int32)
    for i, r in enumerate(rows):
        if len(r) > length:
            raise ValueError(f"row {i} has {len(r)} tokens, more than {length}")
        ids[i, :len(r)] = r
        mask[i, :len(r)] = 1
    return ids, mask


def pad_ends(encoded: Sequence[EncodedResponse], num: int) -> tuple[np.ndarray, np.ndarray]:
    """END positions [R, num] (padding slots point at position 0) and their validity [R, num]."""
    pos = np.zeros((len(encoded), num), np.int32)
    valid = np.zeros((len(encoded), num), bool)
    for i, e in enumerate(encoded):
        if e.num_ends > num:
            raise ValueError(f"row {i} has {e.num_ends} END tokens, more than {num}")
        pos[i, :e.num_ends] = e.end_positions
        valid[i, :e.num_ends] = True
    return pos, valid
