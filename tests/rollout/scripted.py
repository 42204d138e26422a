"""A scripted policy: a Sampler whose decode loop emits predetermined tokens (exact tests)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxalign.sampling import loop
from jaxalign.sampling.sampler import Sampler


class ScriptedSampler(Sampler):
    """Each row replays its script, token by token, with the real stop rules of the decode loop
    (stop ids, per-row budgets, max steps). Prefill, append, rollback and compaction are the real
    jitted functions on a real (tiny) model, so cache bookkeeping is exercised too."""

    def __init__(self, model, scripts: list[list[int]], pad_id: int = 0):
        super().__init__(model, pad_id=pad_id)
        self.scripts = [list(s) for s in scripts]
        self.cursor = [0] * len(scripts)
        self.emitted: list[list[int]] = [[] for _ in scripts]

    def run(self, state, config, stops, max_steps):
        tokens = np.array(state.tokens)
        logprobs = np.array(state.logprobs)
        length = np.array(state.length)
        active = np.array(state.active)
        reason = np.array(state.stop_reason)
        budget = np.array(state.budget)
        stop_ids = set(np.asarray(stops.ids).tolist())
        for r in range(len(self.scripts)):
            steps = 0
            while active[r] and steps < max_steps:
                if self.cursor[r] >= len(self.scripts[r]):
                    raise AssertionError(f"row {r} asked for more tokens than scripted: {self.emitted[r]}")
                tok = self.scripts[r][self.cursor[r]]
                self.cursor[r] += 1
                self.emitted[r].append(tok)
                tokens[r, length[r]] = tok
                logprobs[r, length[r]] = -0.5
                length[r] += 1
                steps += 1
                if tok in stop_ids:
                    active[r], reason[r] = False, loop.EOS
                elif length[r] >= min(budget[r], tokens.shape[1]):
                    active[r], reason[r] = False, loop.BUDGET
        # Cache slots advance as the real loop would (one per step for every row).
        cache = state.cache.replace(index=jnp.minimum(state.cache.index + max_steps, state.cache.size - 1))
        return state.replace(tokens=jnp.asarray(tokens), logprobs=jnp.asarray(logprobs), length=jnp.asarray(length),
                             active=jnp.asarray(active), stop_reason=jnp.asarray(reason), cache=cache)
