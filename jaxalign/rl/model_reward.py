"""Language-model rewards in GRPO: the endogenous reward on each policy token, plus the outcome.

For each trajectory the token rewards are r_t (jaxalign.rewards.endogenous, from the reward LM's
logits over prompt + response, exactly the sampled token ids) times `coef` on policy tokens, zero on
tool-output tokens (the policy did not choose them), and `outcome_coef` x the verifier's reward
added on the last response token. `jaxalign.rewards.dense.token_advantages` turns them into
per-token GRPO advantages ("dense": reward-to-go of group-normalised token rewards; "sparse": the
normalised response sum on every token).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxalign.rewards.dense import token_advantages
from jaxalign.rl.config import ModelRewardConfig
from jaxalign.rollout.types import Trajectory
from jaxalign.tokenizer import check_vocab


class ModelReward:
    """Scores rollouts with a reward LM and returns per-token advantages."""

    def __init__(self, config: ModelRewardConfig, default_model: str, tokenizer):
        from jaxalign import models
        from jaxalign.rewards.endo_scorer import EndogenousScorer

        if config.kind != "endogenous":
            raise ValueError(f"model_reward.kind must be 'endogenous' here, got {config.kind!r}")
        self.config = config
        model = models.load(config.model or default_model, dtype="float32")
        # the reward LM scores the policy's own token ids, so it must embed the policy's whole vocabulary
        check_vocab(tokenizer, model.config.vocab_size, "the policy's tokenizer", f"model_reward.model "
                    f"{config.model or default_model}")
        self.scorer = EndogenousScorer(model, tokenizer, alpha=config.alpha, terminal=config.terminal,
                                       batch_size=config.batch_size)

    def model_rewards(self, trajs: Sequence[Trajectory]) -> list[np.ndarray]:
        """`coef` x the reward LM's r_t on each policy token, 0 on tool-output tokens (one per response token)."""
        if not trajs:
            return []
        endo = self.scorer.token_rewards_ids([(t.prompt_tokens + t.tokens, len(t.prompt_tokens)) for t in trajs])
        out = []
        for t, r in zip(trajs, endo):
            if len(r) != len(t.tokens):
                raise RuntimeError(f"reward LM scored {len(r)} tokens of a {len(t.tokens)}-token response")
            out.append(self.config.coef * np.asarray(r, np.float64) * np.asarray(t.loss_mask, np.float64))
        return out

    def token_rewards(self, trajs: Sequence[Trajectory], outcome: np.ndarray) -> list[np.ndarray]:
        """Combined per-token rewards: the model rewards plus `outcome_coef` x outcome on the last token."""
        return self._add_outcome(self.model_rewards(trajs), outcome)

    def _add_outcome(self, rewards: list[np.ndarray], outcome: np.ndarray) -> list[np.ndarray]:
        for r, o in zip(rewards, outcome):
            if r.size:
                r[-1] += self.config.outcome_coef * float(o)
        return rewards

    def advantages(self, trajs: Sequence[Trajectory], outcome: np.ndarray, group_size: int,
                   std: str) -> tuple[list[np.ndarray], np.ndarray]:
        """(per-token advantages, model-reward sums) for consecutive groups of `group_size`."""
        if any(not t.tokens for t in trajs):
            raise RuntimeError("a trajectory has no response token to carry a reward")
        rewards = self.model_rewards(trajs)
        sums = np.array([r.sum() for r in rewards])
        rewards = self._add_outcome(rewards, outcome)
        return token_advantages(rewards, group_size, mode=self.config.mode, std=std), sums
