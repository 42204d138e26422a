"""Reinforcement learning (ASTER stage 2): GRPO."""

from jaxalign.rl import advantages, grpo

__all__ = ["advantages", "grpo"]
