"""Shared training pieces: optimizer, chunked target log-probs."""

from jaxalign.train.logprobs import target_logprobs
from jaxalign.train.optim import OptimConfig, decay_mask, learning_rate_schedule, make_optimizer

__all__ = ["OptimConfig", "decay_mask", "learning_rate_schedule", "make_optimizer", "target_logprobs"]
