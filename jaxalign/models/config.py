"""Model configuration for the Llama / Qwen2 / Qwen3 decoder family, with presets as code."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Literal

from jaxalign.errors import UserError

ARCHITECTURES = ("llama", "qwen2", "qwen3")
HF_ARCH_CLASS = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}
DTypeName = Literal["float32", "bfloat16", "float16"]


class CheckpointError(UserError, ValueError):
    """A checkpoint (config.json, safetensors, GGUF) is missing, corrupt or inconsistent.

    The message always names the file and, where it applies, the tensor or field at fault.
    """


@dataclasses.dataclass(frozen=True, kw_only=True)
class RopeScaling:
    """Rotary-embedding frequency scaling (Hugging Face `rope_parameters` / `rope_scaling`)."""

    type: Literal["default", "linear", "llama3", "yarn"] = "default"
    """"default": none; "linear": positions divided by `factor`; "llama3": Llama-3.1 smooth band;
    "yarn": YaRN (NTK-by-parts interpolation between beta_fast and beta_slow, cos/sin scaled by
    the attention factor), as Qwen3's long-context configs use."""
    factor: float = 1.0
    """Context-extension factor (linear, llama3 and yarn)."""
    low_freq_factor: float = 1.0
    """llama3: wavelengths longer than original_max_position_embeddings / low_freq_factor are scaled."""
    high_freq_factor: float = 4.0
    """llama3: wavelengths shorter than original_max_position_embeddings / high_freq_factor are kept."""
    original_max_position_embeddings: int = 8192
    """llama3 and yarn: the context length the model was pretrained with."""
    beta_fast: float = 32.0
    """yarn: rotations per original context above which a frequency is kept (extrapolated)."""
    beta_slow: float = 1.0
    """yarn: rotations per original context below which a frequency is interpolated (divided by factor)."""
    attention_factor: float | None = None
    """yarn: the cos/sin scale; None: 0.1 ln(factor) + 1 (or the mscale/mscale_all_dim ratio)."""
    mscale: float | None = None
    """yarn: numerator multiplier of ln(factor) when attention_factor is None (with mscale_all_dim)."""
    mscale_all_dim: float | None = None
    """yarn: denominator multiplier of ln(factor) when attention_factor is None (with mscale)."""
    truncate: bool = True
    """yarn: round the correction range to whole dimensions."""

    def context_limit(self, max_position_embeddings: int) -> int:
        """The longest context these frequencies are meant for: the model's own without scaling,
        else at least original_max_position_embeddings * factor."""
        if self.type == "default":
            return max_position_embeddings
        if self.type == "linear":
            return max(max_position_embeddings, int(max_position_embeddings * self.factor))
        return max(max_position_embeddings, int(self.original_max_position_embeddings * self.factor))


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Architecture of a decoder-only transformer of the Llama / Qwen2 / Qwen3 family."""

    architecture: Literal["llama", "qwen2", "qwen3"] = "llama"
    """Which Hugging Face family the weights follow (names, export class)."""
    vocab_size: int
    """Rows of the token embedding (V)."""
    hidden_size: int
    """Residual stream width (D)."""
    intermediate_size: int
    """SwiGLU hidden width (F)."""
    num_layers: int
    """Number of transformer blocks (L)."""
    num_heads: int
    """Query heads (N)."""
    num_kv_heads: int
    """Key/value heads (K); must divide num_heads (grouped-query attention)."""
    head_dim: int | None = None
    """Per-head width (H); None means hidden_size // num_heads."""
    rope_theta: float = 10000.0
    """Rotary base frequency."""
    rope_scaling: RopeScaling = RopeScaling()
    """Rotary frequency scaling."""
    rms_norm_eps: float = 1e-6
    """Epsilon inside every RMSNorm."""
    tie_embeddings: bool = False
    """Output head shares the token embedding matrix."""
    qkv_bias: bool = False
    """Biases on the q/k/v projections (Qwen2; Llama/Qwen3 with attention_bias)."""
    o_bias: bool = False
    """Bias on the attention output projection (Llama/Qwen3 with attention_bias)."""
    mlp_bias: bool = False
    """Biases on the MLP projections (Llama mlp_bias)."""
    qk_norm: bool = False
    """Per-head RMSNorm on q and k before rotary (Qwen3)."""
    max_position_embeddings: int = 4096
    """Longest context the model is meant for (metadata; the cache size is chosen by the caller)."""
    dtype: DTypeName = "float32"
    """Compute dtype of activations and matmuls; logits are always returned in float32."""
    param_dtype: DTypeName = "float32"
    """Storage dtype of the parameters."""
    remat: Literal["none", "full", "dots"] = "none"
    """Rematerialisation of each block in the backward pass: none, everything, or all but matmuls."""
    attention: Literal["auto", "xla", "splash", "pallas_gpu", "cudnn"] = "auto"
    """Attention implementation (`jaxalign.models.attention`): auto is splash on TPU, the Pallas
    kernel on GPU and the blocked XLA path on CPU."""
    kv_cache_dtype: DTypeName | None = None
    """Storage dtype of the decoding KV cache; None is bfloat16 on TPU / GPU and the compute dtype
    on CPU (`jaxalign.models.decode.kv_cache_dtype`)."""

    def __post_init__(self):
        if self.head_dim is None:
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_heads)
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                     "num_kv_heads", "head_dim"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ModelConfig.{name} must be positive, got {getattr(self, name)}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"ModelConfig.num_heads={self.num_heads} is not a multiple of "
                f"num_kv_heads={self.num_kv_heads}"
            )
        if self.head_dim % 2:
            raise ValueError(f"ModelConfig.head_dim={self.head_dim} must be even for rotary")

    @property
    def num_groups(self) -> int:
        """Query heads per key/value head."""
        return self.num_heads // self.num_kv_heads

    def num_params(self) -> int:
        """Exact parameter count (embedding counted once when tied)."""
        d, f, h = self.hidden_size, self.intermediate_size, self.head_dim
        n, k = self.num_heads, self.num_kv_heads
        attn = d * n * h + 2 * d * k * h + n * h * d
        attn += (n * h + 2 * k * h) * self.qkv_bias + d * self.o_bias + 2 * h * self.qk_norm
        mlp = 3 * d * f + (2 * f + d) * self.mlp_bias
        per_layer = attn + mlp + 2 * d
        head = 0 if self.tie_embeddings else d * self.vocab_size
        return self.vocab_size * d + self.num_layers * per_layer + d + head

    def flops_per_token(self, context: int) -> float:
        """Forward FLOPs per token: 2 per matmul weight plus attention scores/values at `context`."""
        # The input embedding is a gather, not a matmul; a tied matrix is still used once, as the
        # output head, so it counts exactly once either way.
        matmul_params = self.num_params() - self.vocab_size * self.hidden_size * (not self.tie_embeddings)
        attention = 2 * 2 * self.num_layers * self.num_heads * self.head_dim * context
        return 2.0 * matmul_params + attention

    # ----------------------------------------------------------------------------- presets
    @classmethod
    def tiny(cls, **overrides: Any) -> ModelConfig:
        """A few-hundred-thousand-parameter model for tests and the CPU demo."""
        base = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_layers=2,
                    num_heads=4, num_kv_heads=2, rope_theta=10000.0, tie_embeddings=True)
        base.update(overrides)
        return cls(**base)

    @classmethod
    def smollm2_135m(cls, **overrides: Any) -> ModelConfig:
        """SmolLM2-135M(-Instruct): Llama architecture, 30 layers, d=576, 9/3 heads, tied."""
        base = dict(architecture="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536,
                    num_layers=30, num_heads=9, num_kv_heads=3, rope_theta=100000.0,
                    rms_norm_eps=1e-5, tie_embeddings=True, max_position_embeddings=8192)
        base.update(overrides)
        return cls(**base)

    @classmethod
    def qwen3_4b(cls, **overrides: Any) -> ModelConfig:
        """Qwen3-4B (ASTER's base model)."""
        base = dict(architecture="qwen3", vocab_size=151936, hidden_size=2560,
                    intermediate_size=9728, num_layers=36, num_heads=32, num_kv_heads=8,
                    head_dim=128, rope_theta=1000000.0, rms_norm_eps=1e-6, tie_embeddings=True,
                    qk_norm=True, max_position_embeddings=40960)
        base.update(overrides)
        return cls(**base)

    @classmethod
    def from_hf(cls, path: str | os.PathLike, **overrides: Any) -> ModelConfig:
        """Reads a Hugging Face `config.json` (a file or the directory holding it)."""
        path = os.fspath(path)
        file = os.path.join(path, "config.json") if os.path.isdir(path) else path
        if not os.path.exists(file):
            raise CheckpointError(f"{file}: config.json not found (expected a Hugging Face directory)")
        try:
            with open(file) as f:
                data = json.load(f)
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{file}: not valid JSON: {e}") from e
        return cls.from_hf_dict(data, source=file, **overrides)

    @classmethod
    def from_hf_dict(cls, hf: dict, *, source: str = "config.json", **overrides: Any) -> ModelConfig:
        """Maps a Hugging Face config mapping to a ModelConfig, rejecting what we do not implement."""
        arch = hf.get("model_type")
        if arch not in ARCHITECTURES:
            raise CheckpointError(
                f"{source}: unsupported architecture model_type={arch!r}; supported: "
                f"{', '.join(ARCHITECTURES)}"
            )
        act = hf.get("hidden_act", "silu")
        if act != "silu":
            raise CheckpointError(f"{source}: unsupported hidden_act={act!r} (only silu/SwiGLU)")
        if hf.get("use_sliding_window"):
            raise CheckpointError(f"{source}: use_sliding_window=true is not supported")

        def need(key: str) -> Any:
            if key not in hf:
                raise CheckpointError(f"{source}: missing field {key!r}")
            return hf[key]

        rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
        theta = rope.pop("rope_theta", hf.get("rope_theta", 10000.0))
        rope_type = rope.pop("rope_type", rope.pop("type", "default"))
        if rope_type not in ("default", "linear", "llama3", "yarn"):
            raise CheckpointError(f"{source}: unsupported rope type {rope_type!r}")
        if rope_type in ("llama3", "yarn"):  # as transformers: the top-level field, else the model's length
            rope["original_max_position_embeddings"] = (hf.get("original_max_position_embeddings")
                                                        or rope.get("original_max_position_embeddings")
                                                        or hf.get("max_position_embeddings", 8192))
            if rope.get("factor") is None:
                rope["factor"] = hf.get("max_position_embeddings", 8192) / rope["original_max_position_embeddings"]
        scaling_keys = {f.name for f in dataclasses.fields(RopeScaling)} - {"type"}
        scaling = RopeScaling(type=rope_type, **{k: v for k, v in rope.items() if k in scaling_keys})
        bias = bool(hf.get("attention_bias", False))
        heads = need("num_attention_heads")
        kw = dict(
            architecture=arch,
            vocab_size=need("vocab_size"),
            hidden_size=need("hidden_size"),
            intermediate_size=need("intermediate_size"),
            num_layers=need("num_hidden_layers"),
            num_heads=heads,
            num_kv_heads=hf.get("num_key_value_heads") or heads,
            head_dim=hf.get("head_dim") or need("hidden_size") // heads,
            rope_theta=float(theta),
            rope_scaling=scaling,
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
            qkv_bias=True if arch == "qwen2" else bias,
            o_bias=False if arch == "qwen2" else bias,
            mlp_bias=bool(hf.get("mlp_bias", False)),
            qk_norm=arch == "qwen3",
            max_position_embeddings=int(hf.get("max_position_embeddings", 4096)),
        )
        kw.update(overrides)
        try:
            return cls(**kw)
        except ValueError as e:
            raise CheckpointError(f"{source}: {e}") from e

    def to_hf_dict(self) -> dict:
        """The Hugging Face config.json mapping that `transformers` loads for this architecture."""
        if self.architecture == "qwen2" and (not self.qkv_bias or self.o_bias):
            raise ValueError("qwen2 export requires qkv_bias=True and o_bias=False")
        if self.architecture == "qwen3" and (not self.qk_norm or self.qkv_bias != self.o_bias):
            raise ValueError("qwen3 export requires qk_norm=True and qkv_bias == o_bias")
        if self.architecture != "llama" and self.mlp_bias:
            raise ValueError(f"{self.architecture} export does not support mlp_bias")
        if self.architecture == "llama" and (self.qk_norm or self.qkv_bias != self.o_bias):
            raise ValueError("llama export requires qk_norm=False and qkv_bias == o_bias")
        rope: dict[str, Any] = {"rope_type": self.rope_scaling.type, "rope_theta": self.rope_theta}
        if self.rope_scaling.type != "default":
            rope["factor"] = self.rope_scaling.factor
        if self.rope_scaling.type == "llama3":
            rope.update(low_freq_factor=self.rope_scaling.low_freq_factor,
                        high_freq_factor=self.rope_scaling.high_freq_factor,
                        original_max_position_embeddings=self.rope_scaling.original_max_position_embeddings)
        if self.rope_scaling.type == "yarn":
            r = self.rope_scaling
            rope.update(original_max_position_embeddings=r.original_max_position_embeddings,
                        beta_fast=r.beta_fast, beta_slow=r.beta_slow, truncate=r.truncate)
            rope.update({k: getattr(r, k) for k in ("attention_factor", "mscale", "mscale_all_dim")
                         if getattr(r, k) is not None})
        out = {
            "architectures": [HF_ARCH_CLASS[self.architecture]],
            "model_type": self.architecture,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_parameters": rope,
            "tie_word_embeddings": self.tie_embeddings,
            "max_position_embeddings": self.max_position_embeddings,
            "dtype": self.param_dtype,
        }
        if self.architecture != "qwen2":
            out["attention_bias"] = self.qkv_bias
        if self.architecture == "llama":
            out["mlp_bias"] = self.mlp_bias
        return out
