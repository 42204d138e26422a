"""Reward-model training (`jaxalign rm train`): Bradley-Terry on preference pairs, for the sentence-level
model (arXiv 2503.04793) and the response-level baseline; the GSM8K preference benchmark; pairwise
accuracy and localisation. The models and their scoring live in `jaxalign.rewards.sentence`."""

from jaxalign.rm.config import RMConfig, RMDataConfig
from jaxalign.rm.trainer import build_reward_model, evaluate_model, load_trained, train_rm

__all__ = ["RMConfig", "RMDataConfig", "build_reward_model", "evaluate_model", "load_trained", "train_rm"]
