"""Model rewards in GRPO: a reward function of the protocol on the response tokens, plus the outcome.

For each trajectory the token rewards are `coef` x the model reward (`jaxalign.rewards.protocol`:
"endogenous", r_t from a reward LM on policy tokens, zero on tool-output tokens; "sentence", a
trained sentence RM's s_k on the token where sentence k ends) plus `outcome_coef` x the verifier's
reward on the last response token. `jaxalign.rl.advantages.token_advantages` turns them into
per-token GRPO advantages ("dense": reward-to-go of group-normalised token rewards; "sparse": the
normalised response sum on every token).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxalign.rewards.protocol import RewardFunction, last_token_rewards, per_trajectory
from jaxalign.rl.advantages import token_advantages
from jaxalign.rl.config import ModelRewardConfig
from jaxalign.rollout.types import Trajectory
from jaxalign.tokenizer import check_vocab


def build_reward(config: ModelRewardConfig, default_model: str, tokenizer) -> RewardFunction:
    """The protocol reward function `config.kind` names (`tokenizer`: the policy's)."""
    if config.kind == "endogenous":
        from jaxalign import models
        from jaxalign.rewards.endo_scorer import EndogenousScorer
        from jaxalign.rewards.protocol import EndogenousReward

        model = models.load(config.model or default_model, dtype="float32")
        # the reward LM scores the policy's own token ids, so it must embed the policy's whole vocabulary
        check_vocab(tokenizer, model.config.vocab_size, "the policy's tokenizer", f"model_reward.model "
                    f"{config.model or default_model}")
        return EndogenousReward(EndogenousScorer(model, tokenizer, alpha=config.alpha, terminal=config.terminal,
                                                 batch_size=config.batch_size))
    if config.kind == "sentence":

        # the RM re-tokenises the decoded response with its own tokenizer: any policy vocabulary works
        from jaxalign.rm.trainer import sentence_reward

        return sentence_reward(config.model, tokenizer, batch_size=config.batch_size)
    raise ValueError(f"model_reward.kind must be 'endogenous' or 'sentence' here, got {config.kind!r}")


class ModelReward:
    """Scores rollouts with a model reward and returns per-token advantages."""

    def __init__(self, config: ModelRewardConfig, default_model: str, tokenizer):
        self.config = config
        self.reward = build_reward(config, default_model, tokenizer)
        self.last_scored: list[tuple[Trajectory, np.ndarray]] = []
        """(trajectory, its `coef`-weighted model rewards) of the last `advantages` call (for inspection)."""

    def model_rewards(self, trajs: Sequence[Trajectory], prompts: Sequence[str] | None = None) -> list[np.ndarray]:
        """`coef` x the model reward on each response token (one array per trajectory)."""
        if not trajs:
            return []
        rows = per_trajectory(self.reward(trajs, prompts=prompts), trajs)
        return [self.config.coef * r.astype(np.float64) for r in rows]

    def token_rewards(self, trajs: Sequence[Trajectory], outcome: np.ndarray,
                      prompts: Sequence[str] | None = None) -> list[np.ndarray]:
        """Combined per-token rewards: the model rewards plus `outcome_coef` x outcome on the last token."""
        return self._add_outcome(trajs, self.model_rewards(trajs, prompts), outcome)

    def _add_outcome(self, trajs, rewards: list[np.ndarray], outcome: np.ndarray) -> list[np.ndarray]:
        placed = per_trajectory(last_token_rewards(trajs, [self.config.outcome_coef * float(o) for o in outcome]),
                                trajs)
        return [r + o for r, o in zip(rewards, placed)]

    def advantages(self, trajs: Sequence[Trajectory], outcome: np.ndarray, group_size: int, std: str, *,
                   prompts: Sequence[str] | None = None) -> tuple[list[np.ndarray], np.ndarray]:
        """(per-token advantages, model-reward sums) for consecutive groups of `group_size`.

        `prompts` (the user messages) are read by the rewards that score text (kind "sentence").
        """
        if any(not t.tokens for t in trajs):
            raise RuntimeError("a trajectory has no response token to carry a reward")
        rewards = self.model_rewards(trajs, prompts)
        self.last_scored = list(zip(trajs, rewards))
        sums = np.array([r.sum() for r in rewards])
        rewards = self._add_outcome(trajs, rewards, outcome)
        return token_advantages(rewards, group_size, mode=self.config.mode, std=std), sums
