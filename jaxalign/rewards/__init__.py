"""Rewards: outcome verifiers and model-based rewards, all behind one protocol (`jaxalign.rewards.protocol`).

    from jaxalign.rewards import OutcomeReward, EndogenousReward, SentenceReward, RewardFunction
"""

from jaxalign.rewards.protocol import (
    EndogenousReward,
    OutcomeReward,
    RewardFunction,
    last_token_rewards,
    per_trajectory,
    response_rewards,
)
from jaxalign.rewards.sentence.reward import SentenceReward
from jaxalign.rewards.verify import REWARDS, get_reward, last_boxed, math_verify_reward, register_reward, strict_reward

__all__ = ["REWARDS", "EndogenousReward", "OutcomeReward", "RewardFunction", "SentenceReward", "get_reward",
           "last_boxed", "last_token_rewards", "math_verify_reward", "per_trajectory", "register_reward",
           "response_rewards", "strict_reward"]
