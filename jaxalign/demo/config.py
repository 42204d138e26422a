"""The embedded default: sizes of the CPU demo of the ASTER pipeline."""

from __future__ import annotations

import dataclasses
from typing import Literal

from jaxalign.models.config import ModelConfig


@dataclasses.dataclass(frozen=True, kw_only=True)
class DemoConfig:
    """Task, model and budget sizes of `make demo` (tool-requiring arithmetic, tiny policy)."""

    run_dir: str = "runs/demo"
    seed: int = 0
    num_steps: int = 2
    """Arithmetic steps per problem (= tool calls of a dense solution)."""
    digits: int = 2
    """Digits of each literal: a tiny model cannot multiply 2-digit numbers in its head."""
    sft_problems: int = 800
    """Problems with synthesised cold-start trajectories."""
    rl_problems: int = 512
    """Further problems used as RL prompts."""
    eval_problems: int = 64
    """Held-out problems for before/after evaluation."""
    eval_k: int = 4
    """Samples per held-out problem (avg@k at `eval_temperature`)."""
    eval_temperature: float = 1.0
    """Sampling temperature of every evaluation (0: greedy); training rollouts use `rl_temperature`."""
    cold_start: Literal["dense", "sparse"] = "dense"
    system_prompt: str = ""
    """System message of every prompt (empty: none; the tiny policy learns the format from SFT)."""
    narrate: bool = False
    """Cold-start trajectories say "Step k: ..." before each call (False: code and outputs only)."""
    teacher_error_rate: float = 0.3
    """Share of cold-start trajectories from a flawed teacher that stops early and boxes an
    intermediate result (real distilled data has such errors). SFT imitates the flaw; GRPO with the
    answer verifier has to remove it, which is what RL adds on top of the cold start here."""
    vocab_size: int = 384
    split_digits: bool = True
    """Tokenizer: one token per digit, or frequent numbers as single pieces."""
    model: ModelConfig = ModelConfig.tiny(vocab_size=384, hidden_size=64, intermediate_size=256, num_layers=2,
                                          num_heads=4, num_kv_heads=4)
    sft_epochs: int = 20
    """Enough for the tiny model to learn to copy numbers between code and outputs (below ~16 it
    has not; calibration in the closing note of the demo issue)."""
    sft_batch_size: int = 16
    sft_lr: float = 3e-3
    sft_seq_len: int = 192
    rl_steps: int = 40
    rl_prompts_per_step: int = 8
    rl_group_size: int = 8
    rl_refill_rounds: int = 1
    rl_lr: float = 3e-4
    rl_max_response_tokens: int = 96
    rl_max_tool_calls: int = 4
    rl_temperature: float = 1.0
    ablation: bool = False
    """Also run the sparse cold start with the same RL and report both (ASTER's central ablation)."""

    def smaller(self, factor: int) -> DemoConfig:
        """A reduced copy for the test suite."""
        return dataclasses.replace(self, sft_problems=max(16, self.sft_problems // factor),
                                   rl_problems=max(16, self.rl_problems // factor),
                                   eval_problems=max(8, self.eval_problems // factor),
                                   sft_epochs=max(1, self.sft_epochs // factor),
                                   rl_steps=max(2, self.rl_steps // factor), rl_prompts_per_step=4, rl_group_size=4,
                                   sft_batch_size=4, eval_k=2)
