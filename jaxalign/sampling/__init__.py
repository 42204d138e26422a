"""Sampling: pure primitives, the jitted decode loop, and the host-side Sampler."""

from jaxalign.sampling.functional import SamplingConfig, filter_logits, sample, stop_sequence_hit
from jaxalign.sampling.loop import STOP_NAMES, DecodeState
from jaxalign.sampling.sampler import Completion, Sampler, StopTable, bucket

__all__ = ["STOP_NAMES", "Completion", "DecodeState", "Sampler", "SamplingConfig", "StopTable",
           "bucket", "filter_logits", "sample", "stop_sequence_hit"]
