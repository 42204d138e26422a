"""Rollout configuration and the trajectory record."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from jaxalign.sampling.functional import SamplingConfig


@dataclasses.dataclass(frozen=True, kw_only=True)
class RolloutConfig:
    """Multi-turn tool-integrated generation."""

    tool_format: str = "markdown"
    """"markdown" (```python / ```output blocks) or "hermes" (<tool_call> JSON + tool turn)."""
    max_tool_calls: int = 8
    """The interaction budget: tool calls per trajectory; a call beyond it ends the trajectory."""
    max_response_tokens: int = 1024
    """Budget for everything after the prompt (policy and tool-output tokens)."""
    max_tool_output_tokens: int = 256
    """A longer tool output is cut to this many tokens and marked as truncated."""
    max_segment_tokens: int = 256
    """Most tokens generated between two host checks of one row (device buffer size)."""
    steps_per_call: int = 32
    """Decode steps per device call; between calls the host services finished tool calls."""
    tool_workers: int = 4
    """Threads submitting tool calls to the sandbox (calls run in sandbox processes)."""
    overlap_tools: bool = True
    """Keep decoding other rows while tool calls run (False: wait for every pending call first)."""
    sampling: SamplingConfig = SamplingConfig()
    """Temperature, top-p, top-k."""
    kv_cache_dtype: Literal["float32", "bfloat16", "float16"] | None = None
    """Storage dtype of the rollout KV cache; None: bfloat16 on TPU / GPU, the compute dtype on CPU."""

    def __post_init__(self):
        for name in ("max_response_tokens", "max_tool_output_tokens", "max_segment_tokens", "steps_per_call",
                     "tool_workers"):
            if getattr(self, name) <= 0:
                raise ValueError(f"RolloutConfig.{name} must be positive")
        if self.max_tool_calls < 0:
            raise ValueError("RolloutConfig.max_tool_calls must be >= 0")


@dataclasses.dataclass
class Trajectory:
    """One multi-turn rollout: exact token ids, loss mask, sampling log-probs and tool stats.

    `tokens` are the response ids after the prompt exactly as sampled or appended (never
    re-tokenized from text); `loss_mask[i]` is 1 where the policy produced `tokens[i]` and 0 on
    tool-output (and template) tokens; `logprobs[i]` is the sampling log-prob (0 where masked).
    """

    prompt_tokens: list[int]
    tokens: list[int] = dataclasses.field(default_factory=list)
    loss_mask: list[int] = dataclasses.field(default_factory=list)
    logprobs: list[float] = dataclasses.field(default_factory=list)
    tool_calls: int = 0
    tool_errors: int = 0
    tool_timeouts: int = 0
    hit_tool_budget: bool = False
    hit_token_budget: bool = False
    finish_reason: str = ""
    """"eos", "tool_budget", "token_budget", "cache_full"."""
    text: str = ""
    """The whole response decoded (policy and tool text)."""
    final_text: str = ""
    """The policy text after the last tool output (where the final answer is expected)."""
    turns: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """[{"kind": "policy", "text", "tokens"}, {"kind": "tool", "code", "output", "ok", "timed_out",
    "error", "tokens"}, ...] in order, for logs and the run viewer."""

    @property
    def num_policy_tokens(self) -> int:
        return int(sum(self.loss_mask))

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["num_policy_tokens"] = self.num_policy_tokens
        return out
