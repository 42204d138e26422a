"""Tiny randomly initialised transformers models (the torch reference), built in the test."""

from __future__ import annotations

import numpy as np
import torch
import transformers

VARIANTS = {
    # untied, Llama-3 rope scaling, attention + MLP biases, head_dim != hidden/heads
    "llama3-untied-bias": lambda: transformers.LlamaConfig(
        vocab_size=131, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
        num_attention_heads=6, num_key_value_heads=2, head_dim=16, rope_theta=5000.0,
        tie_word_embeddings=False, attention_bias=True, mlp_bias=True, rms_norm_eps=1e-5,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 16}),
    # tied, linear rope scaling, multi-query attention
    "llama-tied-linear-mqa": lambda: transformers.LlamaConfig(
        vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=1, rope_theta=10000.0, tie_word_embeddings=True,
        rope_scaling={"rope_type": "linear", "factor": 2.0}),
    # Qwen2: q/k/v biases, no o bias, untied
    "qwen2": lambda: transformers.Qwen2Config(
        vocab_size=113, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, rope_theta=1000000.0,
        tie_word_embeddings=False),
    # Qwen3: q/k RMSNorm, head_dim independent of hidden size, tied
    "qwen3": lambda: transformers.Qwen3Config(
        vocab_size=89, hidden_size=40, intermediate_size=72, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=24, rope_theta=1000000.0,
        tie_word_embeddings=True),
    # Qwen3 with YaRN (the long-context setting): a ramp over 7 of 12 frequencies, attention factor 1.14
    "qwen3-yarn": lambda: transformers.Qwen3Config(
        vocab_size=89, hidden_size=40, intermediate_size=72, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=24, max_position_embeddings=256,
        tie_word_embeddings=False,
        rope_parameters={"rope_type": "yarn", "rope_theta": 100.0, "factor": 4.0,
                         "original_max_position_embeddings": 64}),
}

CLASSES = {"llama": transformers.LlamaForCausalLM, "qwen2": transformers.Qwen2ForCausalLM,
           "qwen3": transformers.Qwen3ForCausalLM}


def make_reference(variant: str, seed: int = 0) -> torch.nn.Module:
    """A float32 transformers model with random weights (non-zero biases and norms, so every
    parameter matters to the logits)."""
    torch.manual_seed(seed)
    config = VARIANTS[variant]()
    model = CLASSES[config.model_type](config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def padded_batch(vocab: int, lengths: list[int], side: str, seed: int = 0):
    """Random ids with an attention mask, padded on `side`; real tokens are identical either way."""
    rng = np.random.RandomState(seed)
    t = max(lengths)
    ids = np.zeros((len(lengths), t), np.int32)
    mask = np.zeros((len(lengths), t), np.int32)
    for i, n in enumerate(lengths):
        row = rng.randint(0, vocab, n)
        sl = slice(t - n, t) if side == "left" else slice(0, n)
        ids[i, sl] = row
        mask[i, sl] = 1
    return ids, mask


def reference_logits(model, ids, mask) -> np.ndarray:
    """transformers' logits with explicit position ids counting real tokens."""
    pos = np.maximum(np.cumsum(mask, -1) - 1, 0)
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids, dtype=torch.long),
                    attention_mask=torch.tensor(mask, dtype=torch.long),
                    position_ids=torch.tensor(pos, dtype=torch.long))
    return out.logits.float().numpy()
