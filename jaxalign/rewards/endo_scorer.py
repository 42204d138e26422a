"""Host-side endogenous-reward scoring of (prompt, response) texts with any causal LM.

    scorer = EndogenousScorer(model, tok, alpha=1.0, system_prompt="Prefer correct arithmetic.")
    scores = scorer.score(prompts, responses)            # [N] response rewards
    per_token = scorer.token_rewards(prompts, responses)  # list of [len(response tokens)]

The prompt is rendered with the tokenizer's chat template (an optional system prompt carries a
principle that customises the reward), the response follows as the assistant turn, closed by the
end-of-turn token (stopping is part of the response). Batches are sorted by length, padded to a
fixed batch size and a length bucket, so each bucket compiles once. The output head only runs over
a window that covers the response (prompt positions need no logits), in chunks, so the full
[B, T, V] logits are never materialised.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from jaxalign import sharding
from jaxalign.errors import InputError
from jaxalign.models import Transformer, default_positions
from jaxalign.rewards.endogenous import Terminal, rewards_from_parts, verifier_logprob
from jaxalign.tokenizer import check_vocab, require_chat_template


def round_up(n: int, multiple: int) -> int:
    """n rounded up to a multiple of `multiple` (at least `multiple`)."""
    return max(multiple, -(-n // multiple) * multiple)


def _window_head(model: Transformer, h_BWD, next_ids_BW, alpha: float, chunk: int):
    """(V(logits) [B, W], logits[next id] [B, W]) over a window of hidden states, chunked over W."""
    b, w, d = h_BWD.shape
    chunk = min(chunk, w)
    n = w // chunk  # callers pass W a multiple of the chunk

    def one(args):
        h, nxt = args
        logits = model.logits(h)  # [B, C, V] float32
        value = alpha * jax.nn.logsumexp(logits / alpha, axis=-1)
        return value, jnp.take_along_axis(logits, nxt[..., None], axis=-1)[..., 0]

    hs = h_BWD.reshape(b, n, chunk, d).transpose(1, 0, 2, 3)
    ns = next_ids_BW.reshape(b, n, chunk).transpose(1, 0, 2)
    values, nxt = jax.lax.map(one, (hs, ns))
    return values.transpose(1, 0, 2).reshape(b, w), nxt.transpose(1, 0, 2).reshape(b, w)


def window_token_rewards(model: Transformer, input_ids_BT, attention_mask_BT, start_B, length_B, *,
                         window: int, alpha: float = 1.0, terminal: Terminal = "zero", chunk: int = 64):
    """Endogenous token rewards of one response per row, in window coordinates [B, W].

    The response of row b occupies positions start[b] .. start[b] + length[b] - 1. Window slot w
    is position start[b] - 1 + w, so slot 0 is the last prompt token and slot w >= 1 the response's
    token w - 1. Equals `token_rewards` on the full logits restricted to the response.
    """
    ids = input_ids_BT
    t = ids.shape[1]
    h = model.hidden_states(ids, default_positions(attention_mask_BT), attention_mask_BT)
    pos_BW = start_B[:, None] - 1 + jnp.arange(window)[None]
    in_range = pos_BW < t
    pos_BW = jnp.clip(pos_BW, 0, t - 1)
    h_BWD = jnp.take_along_axis(h, pos_BW[..., None], axis=1)
    next_ids = jnp.take_along_axis(ids, jnp.clip(pos_BW + 1, 0, t - 1), axis=1)
    values, next_logit = _window_head(model, h_BWD, next_ids, alpha, chunk)
    picked = jnp.pad(next_logit[:, :-1], ((0, 0), (1, 0)))  # slot w reads the logits of slot w - 1
    slot = jnp.arange(window)[None]
    resp = (slot >= 1) & (slot <= length_B[:, None]) & in_range
    return rewards_from_parts(picked, values, resp, terminal=terminal)


class EndogenousScorer:
    """Batched endogenous-reward scorer over (prompt, response) texts (see the module docstring)."""

    def __init__(self, model: Transformer, tokenizer, *, alpha: float = 1.0, terminal: Terminal = "zero",
                 system_prompt: str | None = None, batch_size: int = 8, length_multiple: int = 32,
                 chunk: int = 32, mesh: Mesh | None = None, rules: sharding.Rules = sharding.ROLLOUT_RULES):
        """`mesh` (optional) places the parameters by `rules` and splits each batch over its data axes
        ("data", "fsdp"); `batch_size` must then be a multiple of their product."""
        if alpha <= 0:
            raise InputError(f"alpha must be positive, got {alpha}")
        check_vocab(tokenizer, model.config.vocab_size, "the scorer's tokenizer", "being scored")
        require_chat_template(tokenizer, "the scorer's tokenizer")  # prompts are rendered through it
        if length_multiple % chunk:
            raise ValueError(f"length_multiple={length_multiple} must be a multiple of chunk={chunk}")
        self.tokenizer = tokenizer
        self.alpha, self.terminal, self.system_prompt = float(alpha), terminal, system_prompt
        self.batch_size, self.length_multiple, self.chunk = batch_size, length_multiple, chunk
        self.mesh, self.rules = mesh, rules
        self.graphdef, state = nnx.split(model)
        if mesh is not None:
            self._state_shardings = sharding.state_shardings(state, mesh, rules)
            state = jax.device_put(state, self._state_shardings)
            data = mesh.shape["data"] * mesh.shape["fsdp"]
            if batch_size % data:
                raise ValueError(f"batch_size={batch_size} is not a multiple of the mesh's data size {data}")
        self.state = state

    # ------------------------------------------------------------------ encoding
    def prompt_ids(self, prompt: str, messages: Sequence[dict] = ()) -> list[int]:
        """Chat-template ids of [system prompt], user `prompt`, extra `messages`, assistant header."""
        msgs = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        msgs += [{"role": "user", "content": prompt}, *messages]
        return list(self.tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True,
                                                       return_dict=False))

    def response_ids(self, response: str) -> list[int]:
        """Response ids closed by the end-of-turn token; special-token text in it stays plain text."""
        ids = self.tokenizer.encode(response, add_special_tokens=False, split_special_tokens=True)
        return list(ids) + [self.tokenizer.eos_token_id]

    def encode(self, prompt: str, response: str) -> tuple[list[int], int]:
        """(ids of prompt + response, index of the first response token)."""
        p = self.prompt_ids(prompt)
        return p + self.response_ids(response), len(p)

    # ------------------------------------------------------------------ scoring
    @functools.cached_property
    def _jitted(self):
        def fn(state, ids, mask, start, length, window):
            model = nnx.merge(self.graphdef, state)
            with self._mesh_context():
                return window_token_rewards(model, ids, mask, start, length, window=window, alpha=self.alpha,
                                            terminal=self.terminal, chunk=self.chunk)

        return jax.jit(fn, static_argnums=(5,), **self._in_shardings(4))

    def _in_shardings(self, n_rows: int) -> dict:
        # Explicit shardings under a mesh: the parameters by the rules, then `n_rows` batch arguments.
        if self.mesh is None:
            return {}
        rows = [sharding.batch_sharding(self.mesh, self.rules, nd, 0) for nd in (2, 2, 1, 1)[:n_rows]]
        return {"in_shardings": (self._state_shardings, *rows)}

    def _mesh_context(self):
        # Constraints are set while tracing only; without a mesh the model runs unconstrained.
        return sharding.use_mesh(self.mesh, self.rules) if self.mesh is not None else contextlib.nullcontext()

    def _place(self, x: np.ndarray):
        if self.mesh is None:
            return x
        return jax.device_put(x, sharding.batch_sharding(self.mesh, self.rules, x.ndim, 0))

    def token_rewards(self, prompts: Sequence[str], responses: Sequence[str]) -> list[np.ndarray]:
        """Per-token rewards of each response (its tokens, end-of-turn included), in input order."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        return self.token_rewards_ids([self.encode(p, r) for p, r in zip(prompts, responses)])

    def token_rewards_ids(self, encoded: Sequence[tuple[Sequence[int], int]]) -> list[np.ndarray]:
        """Token-in form: `encoded[i]` = (prompt + response ids, index of the first response token),
        e.g. a rollout's `prompt_tokens + tokens`; returns the rewards of each response's tokens."""
        encoded = [(list(ids), int(start)) for ids, start in encoded]
        for i, (ids, start) in enumerate(encoded):
            if not 1 <= start <= len(ids):
                raise ValueError(f"row {i}: response start {start} outside 1..{len(ids)} (a prompt token is needed)")
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
        out: list[np.ndarray | None] = [None] * len(encoded)
        for s in range(0, len(order), self.batch_size):
            idx = order[s:s + self.batch_size]
            rows = [encoded[i] for i in idx]
            t = round_up(max(len(ids) for ids, _ in rows), self.length_multiple)
            w = round_up(max(len(ids) - start for ids, start in rows) + 1, self.chunk)
            ids = np.zeros((self.batch_size, t), np.int32)
            mask = np.zeros((self.batch_size, t), np.int32)
            start = np.ones((self.batch_size,), np.int32)
            length = np.zeros((self.batch_size,), np.int32)
            for j, (row, st) in enumerate(rows):
                ids[j, :len(row)] = row
                mask[j, :len(row)] = 1
                start[j], length[j] = st, len(row) - st
            r = self._jitted(self.state, *(self._place(a) for a in (ids, mask, start, length)), w)
            r = np.asarray(jax.device_get(r))
            for j, i in enumerate(idx):
                out[i] = r[j, 1:1 + length[j]]
        return out

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Response rewards [N] (float64 sums of the float32 token rewards)."""
        return np.asarray([r.sum(dtype=np.float64) for r in self.token_rewards(prompts, responses)])

    def verify(self, prompts: Sequence[str], responses: Sequence[str], *, question: str = "Is the answer correct?",
               yes: str = "Yes") -> np.ndarray:
        """The verifier special case: alpha * log pi_alpha(yes | x, y, question) for each pair, [N]."""
        yes_ids = self.tokenizer.encode(yes, add_special_tokens=False)
        if not yes_ids:
            raise ValueError(f"{yes!r} encodes to no tokens")
        rows = [self.prompt_ids(p, [{"role": "assistant", "content": r}, {"role": "user", "content": question}])
                for p, r in zip(prompts, responses)]
        out = np.zeros((len(rows),), np.float64)
        for s in range(0, len(rows), self.batch_size):
            chunk = rows[s:s + self.batch_size]
            t = round_up(max(map(len, chunk)), self.length_multiple)
            ids = np.zeros((self.batch_size, t), np.int32)
            mask = np.zeros((self.batch_size, t), np.int32)
            last = np.zeros((self.batch_size,), np.int32)
            for j, row in enumerate(chunk):
                ids[j, :len(row)], mask[j, :len(row)], last[j] = row, 1, len(row) - 1
            got = self._verify_jitted(self.state, *(self._place(a) for a in (ids, mask, last)), yes_ids[0])
            out[s:s + len(chunk)] = np.asarray(got)[:len(chunk)]
        return out

    @functools.cached_property
    def _verify_jitted(self):
        def fn(state, ids, mask, last, yes_id):
            model = nnx.merge(self.graphdef, state)
            with self._mesh_context():
                h = model.hidden_states(ids, default_positions(mask), mask)
                h_last = jnp.take_along_axis(h, last[:, None, None], axis=1)  # [B, 1, D]
                return verifier_logprob(model.logits(h_last)[:, 0], yes_id, self.alpha)

        return jax.jit(fn, static_argnums=(4,), **self._in_shardings(3))
