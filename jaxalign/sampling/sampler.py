"""Host-side sampler: batching, shape buckets, stop conditions, text in and out."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from jaxalign import sharding
from jaxalign.models.decode import DecodeWeights, prepare_decode_weights
from jaxalign.models.transformer import Transformer, check_token_ids
from jaxalign.sampling import loop
from jaxalign.sampling.functional import SamplingConfig

NEVER = -2  # a token id no row ever produces: pads stop-sequence tables


def bucket(n: int, minimum: int = 16) -> int:
    """Shape bucket for n: powers of two up to 128, then multiples of 64 up to 1024, then of 256.

    Coarse enough that a run compiles a handful of shapes, fine enough that padding a prompt batch
    wastes at most a third of its compute (prefill is the costliest call of a rollout).
    """
    n = max(n, minimum)
    if n <= 128:
        return 1 << (n - 1).bit_length()
    step = 64 if n <= 1024 else 256
    return -(-n // step) * step


@dataclasses.dataclass
class Completion:
    """One generated continuation."""

    tokens: list[int]
    """Sampled token ids, including the stopping token (EOS or the end of a stop sequence)."""
    logprobs: list[float]
    """Log-prob of each sampled token under the sampling distribution."""
    stop_reason: str
    """"eos", "stop_sequence", "budget" or "cache_full"."""
    text: str | None = None
    """Decoded text when the sampler has a tokenizer."""


@dataclasses.dataclass(frozen=True)
class StopTable:
    """Device arrays describing stop tokens and stop sequences, padded to fixed shapes."""

    ids: jax.Array  # [I] stop token ids, -2 padded to a power of two
    seqs: jax.Array  # [S, W]
    lens: jax.Array  # [S]

    @property
    def window(self) -> int:
        return int(self.seqs.shape[1])

    @classmethod
    def build(cls, stop_token_ids: Sequence[int] = (), stop_sequences: Sequence[Sequence[int]] = (),
              window: int | None = None) -> StopTable:
        ids = list(dict.fromkeys(int(t) for t in stop_token_ids))
        width = max(8, 1 << max(len(ids) - 1, 0).bit_length())  # bucketed: few compiled shapes
        seqs = [list(map(int, s)) for s in stop_sequences if len(s)]
        longest = max((len(s) for s in seqs), default=1)
        w = window or max(8, 1 << (longest - 1).bit_length())
        if longest > w:
            raise ValueError(f"stop sequence of {longest} tokens exceeds the window {w}")
        rows = max(4, 1 << max(len(seqs) - 1, 0).bit_length())
        table = np.full((rows, w), NEVER, np.int32)
        lens = np.full((rows,), w, np.int32)
        for i, s in enumerate(seqs):
            table[i, w - len(s):] = s
            lens[i] = len(s)
        return cls(jnp.asarray(ids + [NEVER] * (width - len(ids)), jnp.int32),
                   jnp.asarray(table), jnp.asarray(lens))


@functools.partial(jax.jit, static_argnums=0)
def prepare_weights(graphdef, params) -> DecodeWeights:
    """The decode layout of (graphdef, params), compiled once per model structure."""
    return prepare_decode_weights(nnx.merge(graphdef, params))


class Sampler:
    """Generates from a Transformer with the jitted decode loop.

        sampler = Sampler(model, tokenizer)
        [c] = sampler.generate([prompt_ids], SamplingConfig(temperature=0), max_new_tokens=32)

    Prompts, caches and batch sizes are rounded up to buckets so each bucket compiles once.
    `update(model_or_params)` swaps in new weights (e.g. after a training step) without recompiling.

    With a `mesh`, the weights are placed by `rules` (default `ROLLOUT_RULES`) and the decode state
    and KV cache by rows over the rules' "batch" axes (`loop.state_shardings`): each data / fsdp
    device decodes its own rows. Batch sizes are then padded up to a multiple of those row shards.
    Without one (or with a one-device mesh), everything runs on one device.
    """

    def __init__(self, model: Transformer, tokenizer=None, *, mesh: Mesh | None = None,
                 rules: sharding.Rules | None = None, pad_id: int | None = None):
        if rules is not None and mesh is None:
            raise ValueError("Sampler: rules without a mesh")
        self.graphdef = nnx.graphdef(model)
        self.config = model.config
        self.mesh = mesh
        self.rules = None if mesh is None else rules or sharding.ROLLOUT_RULES
        # A one-device mesh places nothing: it runs the one-device programs (whose CPU attention paths
        # need no mesh context) on that device, and its results are exactly those of no mesh.
        one = mesh is None or mesh.devices.size == 1
        self.loop = loop.OneDevice(self.config) if one else loop.MeshLoop.get(self.config, mesh, self.rules)
        self.row_shards = 1 if mesh is None else sharding.batch_shards(mesh, self.rules)
        self.update(model)
        self.tokenizer = tokenizer
        if pad_id is None:
            pad_id = getattr(tokenizer, "pad_token_id", None) if tokenizer is not None else None
        self.pad_id = int(pad_id or 0)

    def update(self, model_or_params) -> None:
        """Uses new parameters (a Transformer or its nnx.State), copied once into decode layout."""
        if isinstance(model_or_params, nnx.Module):
            model_or_params = nnx.state(model_or_params)
        if self.mesh is not None:  # a no-op for weights already in this layout (GRPO's `to_rollout`)
            model_or_params = jax.device_put(model_or_params,
                                             sharding.tree_shardings(model_or_params, self.mesh, self.rules))
        self.weights = prepare_weights(self.graphdef, model_or_params)

    # ----------------------------------------------------------------- lower-level steps
    def rows(self, n: int) -> int:
        """Rows a batch of `n` occupies: `n` rounded up to a multiple of the row shards."""
        return -(-n // self.row_shards) * self.row_shards

    def left_pad(self, prompts: Sequence[Sequence[int]], batch: int | None = None):
        """Left-pads prompts to a bucketed width; returns (ids [B, C], mask [B, C])."""
        width = bucket(max(len(p) for p in prompts))
        b = self.rows(batch or len(prompts))
        ids = np.full((b, width), self.pad_id, np.int32)
        mask = np.zeros((b, width), np.int32)
        for i, p in enumerate(prompts):
            if len(p):
                ids[i, width - len(p):] = p
                mask[i, width - len(p):] = 1
        return ids, mask

    def start(self, prompts: Sequence[Sequence[int]], *, cache_size: int, max_tokens: int,
              window: int = 8, seed: int = 0, batch: int | None = None) -> loop.DecodeState:
        """Prefills `prompts` into a fresh cache of `cache_size` slots (`batch` rows, padded up to
        a multiple of the row shards)."""
        ids, mask = self.left_pad(prompts, batch)
        check_token_ids(ids, self.config.vocab_size, "prompt ids")  # under jit they would read NaN rows
        if ids.shape[1] >= cache_size:
            raise ValueError(f"prompt bucket {ids.shape[1]} does not fit a cache of {cache_size} slots")
        return self.loop.prefill(self.weights, ids, mask, jax.random.key(seed), cache_size=cache_size,
                                 max_tokens=max_tokens, window=window)

    def run(self, state: loop.DecodeState, config: SamplingConfig, stops: StopTable,
            max_steps: int) -> loop.DecodeState:
        """Runs the decode loop for at most `max_steps` steps."""
        return self.loop.decode(self.weights, state, stops.ids, stops.seqs, stops.lens, jnp.int32(max_steps),
                                sampling=config, pad_id=self.pad_id)

    def append(self, state: loop.DecodeState, chunks: dict[int, Sequence[int]]) -> loop.DecodeState:
        """Appends token chunks to some rows (e.g. tool outputs), padded to a bucketed width."""
        b = state.tokens.shape[0]
        width = bucket(max(len(c) for c in chunks.values()), minimum=8)
        ids = np.full((b, width), self.pad_id, np.int32)
        mask = np.zeros((b, width), np.int32)
        for row, chunk in chunks.items():
            ids[row, :len(chunk)] = chunk
            mask[row, :len(chunk)] = 1
        check_token_ids(ids, self.config.vocab_size, "appended ids")
        return self.loop.append(self.weights, state, ids, mask)

    def start_segment(self, state: loop.DecodeState, rows_B, budget_B) -> loop.DecodeState:
        """`loop.start_segment` in this sampler's placement."""
        return self.loop.start_segment(state, rows_B, budget_B)

    def stop_rows(self, state: loop.DecodeState, rows_B) -> loop.DecodeState:
        """`loop.stop_rows` in this sampler's placement."""
        return self.loop.stop_rows(state, rows_B)

    def rollback(self, state: loop.DecodeState, drop_B) -> loop.DecodeState:
        """`loop.rollback` in this sampler's placement."""
        return self.loop.rollback(state, drop_B)

    def compact(self, state: loop.DecodeState) -> loop.DecodeState:
        """`loop.compact` in this sampler's placement."""
        return self.loop.compact(state)

    # ----------------------------------------------------------------- convenience
    def generate(self, prompts: Sequence[Sequence[int]], config: SamplingConfig = SamplingConfig(), *,
                 max_new_tokens: int = 256, stop_token_ids: Sequence[int] | None = None,
                 stop_sequences: Sequence[Sequence[int]] = (), seed: int = 0) -> list[Completion]:
        """Completes each prompt (token ids) until EOS, a stop sequence or `max_new_tokens`."""
        if not prompts:
            return []
        if stop_token_ids is None:
            eos = getattr(self.tokenizer, "eos_token_id", None) if self.tokenizer is not None else None
            stop_token_ids = () if eos is None else (eos,)
        stops = StopTable.build(stop_token_ids, stop_sequences)
        n = len(prompts)
        batch = self.rows(bucket(n, minimum=1))
        max_tokens = bucket(max_new_tokens)
        cache_size = bucket(bucket(max(len(p) for p in prompts)) + max_tokens)
        state = self.start(prompts, cache_size=cache_size, max_tokens=max_tokens,
                           window=stops.window, seed=seed, batch=batch)
        rows = np.arange(batch) < n
        state = self.start_segment(state, rows, np.full((batch,), max_new_tokens, np.int32))
        state = self.run(state, config, stops, max_new_tokens)
        tokens, logprobs, length, reason = jax.device_get(
            (state.tokens, state.logprobs, state.length, state.stop_reason))
        out = []
        for i in range(n):
            toks = tokens[i, :length[i]].tolist()
            text = self.tokenizer.decode(toks) if self.tokenizer is not None else None
            out.append(Completion(toks, logprobs[i, :length[i]].tolist(), loop.STOP_NAMES[reason[i]], text))
        return out
