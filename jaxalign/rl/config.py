"""GRPO run configuration."""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

from jaxalign import sharding
from jaxalign.config import non_negative, positive, require
from jaxalign.data.synthesis import SYSTEM_PROMPT
from jaxalign.data.tasks import TaskConfig
from jaxalign.eval.evaluate import EvalConfig
from jaxalign.rl.step import GRPOLossConfig
from jaxalign.rollout.types import RolloutConfig
from jaxalign.sampling.functional import SamplingConfig
from jaxalign.train.config import MOVED_TO_RUN, RunConfig
from jaxalign.train.optim import OptimConfig


@dataclasses.dataclass(frozen=True, kw_only=True)
class StageConfig:
    """One stage of a multi-stage schedule (ASTER raises the response budget in stage 2)."""

    steps: int
    max_response_tokens: int
    max_tool_calls: int
    drop_solved: bool = False
    """Entering this stage, drop prompts the policy solved in every sample of the previous one."""

    def __post_init__(self):
        positive(self, "steps", "max_response_tokens")
        non_negative(self, "max_tool_calls")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelRewardConfig:
    """A reward read from a model, added to the verifier's outcome reward (jaxalign.rewards.protocol).

    "endogenous": r_t = Q(s_t, a_t) - V(s_{t+1}) from a reward LM's logits (jaxalign.rewards.endogenous)
    on each policy token (tool-output tokens get none). "sentence": a trained sentence-level reward
    model (a `jaxalign rm train` run) puts each sentence reward s_k on the policy token where sentence
    k ends (jaxalign.rewards.sentence.reward). "dense" mode gives each token the group-normalised
    reward-to-go; "sparse" puts the response's sum (for "sentence": v_last - v_0) on its last token,
    which makes the advantage one group-normalised value per response.
    """

    kind: Literal["none", "endogenous", "sentence"] = "none"
    model: str = ""
    """"endogenous": the reward LM (HF directory, .gguf or registry name; empty: the initial policy
    checkpoint). "sentence": the reward model's run directory (required)."""
    alpha: float = 1.0
    """"endogenous" only: the soft value's temperature."""
    terminal: Literal["zero", "bootstrap"] = "zero"
    """"endogenous" only: the value after the last token."""
    mode: Literal["dense", "sparse"] = "dense"
    coef: float = 1.0
    """Weight of the model reward."""
    outcome_coef: float = 1.0
    """Weight of the verifier's outcome reward (placed on the last response token)."""
    batch_size: int = 16
    """Responses per reward-model forward."""

    def __post_init__(self):
        positive(self, "alpha", "batch_size")
        non_negative(self, "coef", "outcome_coef")
        require(self, "model", self.kind != "sentence" or bool(self.model),
                "kind=sentence needs the reward model's run directory (a `jaxalign rm train` run_dir)")


@dataclasses.dataclass(frozen=True, kw_only=True)
class GRPOConfig:
    """GRPO with sandboxed multi-turn rollouts (ASTER stage 2)."""

    model: str
    """The starting policy: HF directory (e.g. an SFT run's hf/), .gguf, or packaged name."""
    tokenizer: str = ""
    """Default: the model's."""
    task: TaskConfig = TaskConfig()
    prompts_per_step: int = 8
    """Prompts per rollout batch (the reproduction uses 128)."""
    group_size: int = 8
    """Samples per prompt (G)."""
    mini_batches: int = 2
    """Optimizer steps per rollout batch."""
    micro_batches: int = 1
    """Gradient accumulation: each mini-batch runs as this many micro-batches (same update, 1/k of the
    activation memory)."""
    steps: int = 100
    """Rollout batches, when `stages` is empty."""
    stages: tuple[StageConfig, ...] = ()
    """Multi-stage schedule; empty = one stage of `steps` with the rollout budgets."""
    rollout: RolloutConfig = RolloutConfig(sampling=SamplingConfig(temperature=1.0))
    loss: GRPOLossConfig = GRPOLossConfig()
    optim: OptimConfig = OptimConfig(learning_rate=1e-6, warmup_fraction=0.0, schedule="constant",
                                     weight_decay=0.0)
    reward: str = "strict"
    """Outcome reward: "strict", "math_verify", or a registered name."""
    model_reward: ModelRewardConfig = ModelRewardConfig()
    """Optional token-level reward from a language model (the endogenous reward)."""
    system_prompt: str = SYSTEM_PROMPT
    """System message of every prompt (must match the cold-start data)."""
    dynamic_sampling: bool = True
    """Drop groups whose rewards are all equal (zero advantage) and refill from new prompts."""
    max_refill_rounds: int = 2
    advantage_std: Literal["unbiased", "population", "none"] = "unbiased"
    eval: EvalConfig = EvalConfig(k=1)
    eval_every: int = 0
    """Evaluate on the held-out problems every this many steps (0: only at the end)."""
    sandbox_timeout_s: float = 5.0
    sandbox_workers: int = 4
    save_trajectories_every: int = 5
    """Write a sample of trajectories (for `jaxalign view`) every this many steps."""
    run: RunConfig = RunConfig(run_dir="runs/grpo", save_every=20, keep_checkpoints=2, log_every=1)
    """Run directory, cadences, seed (prompt order, rollout seeds), the policy training mesh (TRAIN_RULES),
    multi-host start-up, precision, and the final policy's HF export (for `jaxalign eval`, `chat`).
    Metrics of every step are written; `log_every` is the console cadence."""
    rollout_mesh: sharding.MeshConfig | None = None
    """Sampler mesh over each host's own devices (rules: ROLLOUT_RULES); None: all of them, with the
    training mesh's tensor size. See jaxalign.rl.placement."""
    reference_mesh: sharding.MeshConfig | None = None
    """Mesh of the frozen reference policy (KL penalty only); None: the training mesh."""

    MOVED: ClassVar[dict[str, str]] = MOVED_TO_RUN

    def __post_init__(self):
        require(self, "model", bool(self.model), "set the starting policy (an SFT run's hf/ directory, a .gguf, ...)")
        positive(self, "prompts_per_step", "group_size", "mini_batches", "micro_batches", "sandbox_timeout_s",
                 "sandbox_workers")
        non_negative(self, "max_refill_rounds", "eval_every", "save_trajectories_every")
        require(self, "steps", self.steps > 0 or bool(self.stages), "must be > 0 (or give `stages`)")
        require(self, "group_size", self.group_size >= 2 or self.advantage_std != "unbiased",
                "must be >= 2 for advantage_std=unbiased")
        require(self, "mini_batches", (self.prompts_per_step * self.group_size) % self.mini_batches == 0,
                f"must divide prompts_per_step * group_size = {self.prompts_per_step * self.group_size}")
        require(self, "micro_batches", (self.prompts_per_step * self.group_size // self.mini_batches)
                % self.micro_batches == 0, "must divide a mini-batch's rows")

    def schedule(self) -> tuple[StageConfig, ...]:
        """The stages to run (a single stage from `steps` and the rollout budgets by default)."""
        if self.stages:
            return self.stages
        return (StageConfig(steps=self.steps, max_response_tokens=self.rollout.max_response_tokens,
                            max_tool_calls=self.rollout.max_tool_calls),)
