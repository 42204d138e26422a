"""Rewards: outcome verification (and, with their own modules, model-based rewards)."""

from jaxalign.rewards.verify import REWARDS, get_reward, last_boxed, math_verify_reward, register_reward, strict_reward

__all__ = ["REWARDS", "get_reward", "last_boxed", "math_verify_reward", "register_reward", "strict_reward"]
