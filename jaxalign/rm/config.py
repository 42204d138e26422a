"""Reward-model training configuration (`jaxalign rm train`)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

from jaxalign.config import non_negative, positive, require
from jaxalign.models import ModelConfig
from jaxalign.rm.benchmark import KINDS
from jaxalign.train.config import MOVED_TO_RUN, RunConfig
from jaxalign.train.optim import OptimConfig


@dataclasses.dataclass(frozen=True, kw_only=True)
class RMDataConfig:
    """Which preference pairs, encoded how."""

    train: str = ""
    """Preference JSONL (schema: jaxalign.data) to train on; empty: the GSM8K benchmark's train split."""
    test: str = ""
    """Preference JSONL to evaluate on after training; empty: the GSM8K benchmark's test split."""
    benchmark_seed: int = 0
    """Seed of the built-in benchmark (corruptions and the train/test split by problem)."""
    test_fraction: float = 0.2
    """Fraction of GSM8K problems held out for the benchmark's test split."""
    kinds: tuple[str, ...] = KINDS
    """Corruption kinds of the built-in benchmark."""
    max_train_pairs: int = 0
    """Train on a seeded random subset of this many pairs (0: all)."""
    max_test_pairs: int = 0
    """Evaluate on a seeded random subset of this many pairs (0: all)."""
    max_len: int = 512
    """Pairs with a side longer than this many tokens are dropped."""
    length_multiple: int = 64
    """Batch lengths round up to a multiple of this (one compiled step per bucket; max_len: one shape)."""
    ends_multiple: int = 8
    """END slots per row round up to a multiple of this (sentence model)."""
    splitter: str = "rules"
    """Registered sentence splitter (jaxalign.rewards.sentence.SPLITTERS)."""
    system_prompt: str | None = None
    """Optional system message rendered before every prompt."""

    def __post_init__(self):
        require(self, "test_fraction", 0.0 < self.test_fraction < 1.0, "must be in (0, 1)")
        positive(self, "max_len", "length_multiple", "ends_multiple")
        non_negative(self, "max_train_pairs", "max_test_pairs")
        if unknown := sorted(set(self.kinds) - set(KINDS)):
            raise ValueError(f"RMDataConfig.kinds: unknown {unknown}; known: {list(KINDS)}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RMConfig:
    """A reward model trained with the Bradley-Terry loss on preference pairs."""

    kind: Literal["sentence", "response"] = "sentence"
    """"sentence": END tokens, value/query/key heads, attention over sentence rewards;
    "response": the baseline, a scalar head on the last token."""
    model: str = ""
    """Backbone checkpoint: HF directory, .gguf or packaged name; empty: trained from scratch (`init`)."""
    init: ModelConfig | None = None
    """Backbone architecture when training from scratch (its vocab_size is set from the tokenizer)."""
    tokenizer: str = ""
    """Tokenizer path (default: the model's)."""
    head_dim: int = 256
    """Query/key width m of the sentence model."""
    use_attention: bool = True
    """Sentence model: attention aggregation; False is the ablation R = sum_k v_k (logit / max N)."""
    use_rope: bool = True
    """Sentence model: rotary encoding of the sentence index on queries and keys."""
    rope_theta: float = 10000.0
    """Rotary base of the sentence-index encoding."""
    reward_penalty: float = 0.0
    """Weight of the R^2 penalty added to the Bradley-Terry loss."""
    freeze_backbone: bool = False
    """Train the heads only (the backbone gets no gradients and no optimizer state)."""
    cache_features: bool = False
    """With freeze_backbone: run the backbone once per train/test response, cache the hidden states the
    heads read, and train the heads on the cache (jaxalign.rm.features)."""
    features_dir: str = ""
    """Feature cache directory (default run_dir/features); runs sharing it reuse each other's rows."""
    feature_batch_rows: int = 8
    """Responses per backbone forward when extracting cached features."""
    data: RMDataConfig = RMDataConfig()
    optim: OptimConfig = OptimConfig(learning_rate=1e-4, weight_decay=0.0)
    batch_size: int = 8
    """Pairs per optimizer step."""
    epochs: int = 1
    max_steps: int = 0
    """Stop after this many steps (0: run all epochs)."""
    eval_batch_size: int = 16
    """Pairs per evaluation batch."""
    run: RunConfig = RunConfig(run_dir="runs/rm", save_every=200, keep_checkpoints=2, log_every=10, export_hf=False)
    """Run directory, cadences, seed (head and from-scratch init, data order, subsets), mesh, precision.
    `export_hf` stays false: a reward model is loaded from its run directory (`jaxalign.rm.load_trained`)."""

    MOVED: ClassVar[dict[str, str]] = MOVED_TO_RUN

    def __post_init__(self):
        require(self, "model", bool(self.model) or self.init is not None,
                "set `model` (a checkpoint) or `init` (a ModelConfig to train from scratch)")
        require(self, "head_dim", self.head_dim > 0 and self.head_dim % 2 == 0,
                "must be positive and even (rotary pairs)")
        positive(self, "batch_size", "epochs", "eval_batch_size", "rope_theta")
        require(self, "run", not self.run.export_hf, "run.export_hf must be false: a reward model is not a causal LM; "
                "load it from its run directory (jaxalign.rm.load_trained, GRPO model_reward.kind=sentence)")
        non_negative(self, "max_steps", "reward_penalty")
        if self.cache_features and not self.freeze_backbone:
            raise ValueError("RMConfig.cache_features needs RMConfig.freeze_backbone: cached backbone features "
                             "are only valid while the backbone does not train")
        if self.feature_batch_rows <= 0:
            raise ValueError(f"RMConfig.feature_batch_rows must be positive, got {self.feature_batch_rows}")
