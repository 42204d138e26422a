"""The host-side multi-turn rollout loop: generate, pause at tool calls, run them, append, resume.

Device work (the jitted decode loop, appends, rollbacks, cache compaction) goes through the
`Sampler`; tool calls run in sandbox sessions (one per trajectory, stateful like a notebook) on a
thread pool, so rows waiting for their tool keep no one else from decoding.
"""

from __future__ import annotations

import concurrent.futures as cf
import copy
import dataclasses
import functools
import logging
import time
from collections.abc import Sequence

import jax
import numpy as np

from jaxalign.rollout.formats import ToolCall, ToolFormat, get_format
from jaxalign.rollout.types import RolloutConfig, Trajectory
from jaxalign.sampling import loop
from jaxalign.sampling.sampler import Sampler, StopTable, bucket

log = logging.getLogger(__name__)
ACTIVE, WAITING, DONE = "active", "waiting", "done"


@dataclasses.dataclass
class _Row:
    traj: Trajectory
    status: str = ACTIVE
    segment: list[int] = dataclasses.field(default_factory=list)  # policy tokens since last tool output
    consumed: int = 0  # tokens of the current device segment already copied to the host
    session: object = None
    future: cf.Future | None = None
    call: ToolCall | None = None


@functools.lru_cache(maxsize=16)
def marker_token_ids(tokenizer, markers: tuple[str, ...]) -> tuple[int, ...]:
    """Vocabulary ids whose text contains the last character run of a marker (decode pauses)."""
    if not markers:
        return ()
    vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    out = []
    for i, piece in enumerate(vocab):
        text = tokenizer.convert_tokens_to_string([piece]) if piece is not None else ""
        if any(m in text or (len(m) > 3 and text.strip() and m.endswith(text.strip()) and len(text.strip()) > 1)
               for m in markers):
            out.append(i)
    return tuple(out)


def format_tool_output(result) -> str:
    """What the policy reads back: stdout, then the error (traceback tail) or a timeout note."""
    text = result.stdout
    if result.timed_out:
        text += ("" if not text or text.endswith("\n") else "\n") + "TimeoutError: execution timed out"
    elif not result.ok:
        err = result.stderr.strip() or (result.error or "error")
        text += ("" if not text or text.endswith("\n") else "\n") + err
    return text


class RolloutEngine:
    """Runs batches of multi-turn tool-integrated trajectories.

        engine = RolloutEngine(sampler, tokenizer, sandbox, RolloutConfig(tool_format="markdown"))
        trajectories = engine.run(prompt_token_lists, seed=0)
    """

    def __init__(self, sampler: Sampler, tokenizer, sandbox, config: RolloutConfig = RolloutConfig(), *,
                 eos_token_ids: Sequence[int] | None = None):
        self.sampler = sampler
        self.tokenizer = tokenizer
        self.sandbox = sandbox
        self.config = config
        self.format: ToolFormat = get_format(config.tool_format)
        eos = list(eos_token_ids) if eos_token_ids is not None else [tokenizer.eos_token_id]
        self.eos_ids = set(eos)
        self.stops = StopTable.build(eos + list(marker_token_ids(tokenizer, self.format.markers())))
        # generate_s includes prefill_s (the prompt forward) and every decode call.
        self.timings = {"generate_s": 0.0, "prefill_s": 0.0, "tool_s": 0.0, "tool_wall_s": 0.0, "overlap_s": 0.0}

    def with_config(self, config: RolloutConfig) -> RolloutEngine:
        """A copy running under `config` (same tool format), e.g. evaluation at another temperature.

        It shares the sampler, tokenizer, sandbox and timings; this engine keeps its own config. A new
        `config.sampling` compiles the decode loop once more (sampling is a static argument).
        """
        if config.tool_format != self.config.tool_format:
            raise ValueError(f"with_config keeps the tool format ({self.config.tool_format!r}), "
                             f"got {config.tool_format!r}")
        other = copy.copy(self)
        other.config = config
        return other

    # ----------------------------------------------------------------------------- helpers
    def _decode(self, tokens: Sequence[int]) -> str:
        return self.tokenizer.decode(list(tokens))

    def _call_end_token(self, segment: list[int], call: ToolCall) -> int:
        """Number of segment tokens needed to cover the call's text (the rest is rolled back)."""
        lo, hi = 1, len(segment)
        while lo < hi:  # smallest prefix whose text reaches the end of the call
            mid = (lo + hi) // 2
            if len(self._decode(segment[:mid])) >= call.end:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def _tool_tokens(self, row: _Row, output: str) -> list[int]:
        context = self._decode(row.traj.prompt_tokens + row.traj.tokens)
        text = self.format.render_output(output, self.tokenizer, context)
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        limit = self.config.max_tool_output_tokens
        if len(ids) > limit:
            marker = self.tokenizer.encode("\n...[output truncated]\n", add_special_tokens=False)
            tail = self.tokenizer.encode(self.format.render_output("", self.tokenizer, context),
                                         add_special_tokens=False)[-4:]
            ids = ids[: max(0, limit - len(marker) - len(tail))] + marker + tail
        return ids

    def _finish(self, row: _Row, reason: str) -> None:
        row.status = DONE
        t = row.traj
        t.finish_reason = reason
        t.hit_tool_budget = reason == "tool_budget"
        t.hit_token_budget = reason == "token_budget"
        if row.segment:
            t.turns.append({"kind": "policy", "text": self._decode(row.segment), "tokens": len(row.segment)})
        t.text = self._decode(t.tokens)
        t.final_text = self._decode(row.segment)
        if row.session is not None:
            row.session.close()
            row.session = None

    def _run_tool(self, row: _Row, code: str):
        if row.session is None:
            row.session = self.sandbox.session()
        t0 = time.perf_counter()
        result = row.session.run(code)
        return result, time.perf_counter() - t0

    # ----------------------------------------------------------------------------- main loop
    def run(self, prompts: Sequence[Sequence[int]], *, seed: int = 0) -> list[Trajectory]:
        """Rolls out one trajectory per prompt (token ids; use a chat template upstream)."""
        cfg = self.config
        n = len(prompts)
        batch = bucket(n, minimum=1)
        rows = [_Row(Trajectory(prompt_tokens=list(p))) for p in prompts]
        prompt_width = bucket(max(len(p) for p in prompts))
        slack = max(cfg.steps_per_call, bucket(cfg.max_tool_output_tokens, minimum=8))
        cache_size = bucket(prompt_width + cfg.max_response_tokens + 2 * slack)
        seg = min(bucket(cfg.max_segment_tokens), bucket(cfg.max_response_tokens))
        t0 = time.perf_counter()
        state = self.sampler.start(prompts, cache_size=cache_size, max_tokens=seg, window=self.stops.window,
                                   seed=seed, batch=batch)
        jax.block_until_ready(state.logits)
        self.timings["prefill_s"] += time.perf_counter() - t0
        self.timings["generate_s"] += time.perf_counter() - t0
        state = self._start(state, {i: r for i, r in enumerate(rows)}, seg)
        pool = cf.ThreadPoolExecutor(max_workers=self.config.tool_workers)
        try:
            while any(r.status != DONE for r in rows):
                pending = [r.future for r in rows if r.future is not None]
                if pending and not cfg.overlap_tools:
                    t0 = time.perf_counter()
                    cf.wait(pending)
                    self.timings["tool_wall_s"] += time.perf_counter() - t0
                    state = self._service_tools(state, rows, seg)
                if any(r.status == ACTIVE for r in rows):
                    state = self._ensure_room(state, cfg.steps_per_call)
                    t0 = time.perf_counter()
                    busy_tools = any(r.status == WAITING for r in rows)
                    state = self.sampler.run(state, cfg.sampling, self.stops, cfg.steps_per_call)
                    host = jax.device_get((state.tokens, state.logprobs, state.length, state.active,
                                           state.stop_reason))
                    dt = time.perf_counter() - t0
                    self.timings["generate_s"] += dt
                    if busy_tools:
                        self.timings["overlap_s"] += dt
                    state = self._collect(state, rows, host, seg, pool)
                else:
                    t0 = time.perf_counter()
                    cf.wait([r.future for r in rows if r.future is not None], return_when=cf.FIRST_COMPLETED)
                    self.timings["tool_wall_s"] += time.perf_counter() - t0
                state = self._service_tools(state, rows, seg)
        finally:
            pool.shutdown(wait=True)
            for r in rows:
                if r.session is not None:
                    r.session.close()
        return [r.traj for r in rows]

    def _start(self, state, rows: dict[int, _Row], seg: int):
        """Starts a device segment for `rows` with budget = min(segment buffer, tokens left)."""
        if not rows:
            return state
        b = state.tokens.shape[0]
        mask = np.zeros(b, bool)
        budget = np.zeros(b, np.int32)
        for i, r in rows.items():
            left = self.config.max_response_tokens - len(r.traj.tokens)
            mask[i] = True
            budget[i] = min(seg, left)
            r.consumed = 0
            r.status = ACTIVE
        return self.sampler.start_segment(state, mask, budget)

    def _ensure_room(self, state, needed: int):
        if int(state.cache.index) + needed > state.cache.size:
            state = self.sampler.compact(state)
        if int(state.cache.index) + needed > state.cache.size:
            raise RuntimeError("KV cache too small for the rollout budgets (increase max_response_tokens slack)")
        return state

    def _collect(self, state, rows: list[_Row], host, seg: int, pool):
        tokens, logprobs, length, active, reason = host
        drop = np.zeros(state.tokens.shape[0], np.int32)
        restart, host_stops = {}, np.zeros(state.tokens.shape[0], bool)
        for i, r in enumerate(rows):
            if r.status != ACTIVE:
                continue
            new = tokens[i, r.consumed:length[i]].tolist()
            r.traj.tokens += new
            r.traj.loss_mask += [1] * len(new)
            r.traj.logprobs += logprobs[i, r.consumed:length[i]].tolist()
            r.segment += new
            r.consumed = int(length[i])
            stopped = not active[i]
            call = self.format.find_call(self._decode(r.segment)) if new else None
            if call is not None and not self.format.ends_turn:
                keep = self._call_end_token(r.segment, call)
                extra = len(r.segment) - keep
                if extra:
                    drop[i] = extra
                    del r.segment[keep:], r.traj.tokens[len(r.traj.tokens) - extra:]
                    del r.traj.loss_mask[len(r.traj.loss_mask) - extra:], r.traj.logprobs[len(r.traj.logprobs) - extra:]
                if not stopped:
                    host_stops[i] = True
                self._begin_tool(r, call, pool)
            elif stopped:
                why = loop.STOP_NAMES[reason[i]]
                hit_eos = bool(new) and new[-1] in self.eos_ids
                if hit_eos and call is not None:  # hermes: the call closes the assistant turn
                    self._begin_tool(r, call, pool)
                elif hit_eos:
                    self._finish(r, "eos")
                elif len(r.traj.tokens) >= self.config.max_response_tokens:
                    self._finish(r, "token_budget")
                elif why == "cache_full":
                    self._finish(r, "cache_full")
                else:  # segment buffer full, or paused on a marker that was not a complete call
                    restart[i] = r
        if host_stops.any():
            state = self.sampler.stop_rows(state, host_stops)
        if drop.any():
            state = self.sampler.rollback(state, drop)
        return self._start(state, restart, seg)

    def _begin_tool(self, row: _Row, call: ToolCall, pool) -> None:
        t = row.traj
        t.turns.append({"kind": "policy", "text": self._decode(row.segment), "tokens": len(row.segment)})
        if t.tool_calls >= self.config.max_tool_calls:
            row.segment = []
            self._finish(row, "tool_budget")
            return
        t.tool_calls += 1
        row.call = call
        row.status = WAITING
        if call.error is not None:  # malformed call: answer with the parse error, nothing runs
            row.future = cf.Future()
            row.future.set_result((None, 0.0))
        else:
            row.future = pool.submit(self._run_tool, row, call.code)

    def _service_tools(self, state, rows: list[_Row], seg: int):
        appends, restart = {}, {}
        for i, r in enumerate(rows):
            if r.status != WAITING or not r.future.done():
                continue
            result, seconds = r.future.result()
            self.timings["tool_s"] += seconds
            r.future = None
            if result is None:
                output, turn = r.call.error, {"ok": False, "timed_out": False, "error": r.call.error}
                r.traj.tool_errors += 1
            else:
                output = format_tool_output(result)
                turn = {"ok": result.ok, "timed_out": result.timed_out, "error": result.error}
                r.traj.tool_errors += int(not result.ok and not result.timed_out)
                r.traj.tool_timeouts += int(result.timed_out)
            ids = self._tool_tokens(r, output)
            r.traj.turns.append({"kind": "tool", "code": r.call.code, "output": output, "tokens": len(ids), **turn})
            r.segment = []
            if len(r.traj.tokens) + len(ids) >= self.config.max_response_tokens:
                self._finish(r, "token_budget")
                continue
            r.traj.tokens += ids
            r.traj.loss_mask += [0] * len(ids)
            r.traj.logprobs += [0.0] * len(ids)
            appends[i] = ids
            restart[i] = r
        if appends:
            width = bucket(max(len(c) for c in appends.values()), minimum=8)
            state = self._ensure_room(state, width)
            state = self.sampler.append(state, appends)
            state = self._start(state, restart, seg)
        return state
