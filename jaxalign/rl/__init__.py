"""Reinforcement learning (ASTER stage 2): GRPO."""

from jaxalign.rl import grpo

__all__ = ["grpo"]
