"""`jaxalign chat [CONFIG] [key=value ...]`: chat-complete prompts with a model and report speed."""

from __future__ import annotations

import dataclasses
import time

from jaxalign.cli.args import DTYPES
from jaxalign.config import positive, require
from jaxalign.sampling.functional import SamplingConfig


@dataclasses.dataclass(frozen=True, kw_only=True)
class ChatConfig:
    """Chat completion with any supported checkpoint."""

    model: str = "smollm2-135m-instruct"
    """HF directory, .gguf file, or packaged model name."""
    prompts: tuple[str, ...] = ("What is the capital of France?",)
    """User messages, completed as one batch."""
    system: str | None = None
    """Optional system message (otherwise the chat template's default)."""
    max_new_tokens: int = 64
    """Most tokens generated per prompt."""
    sampling: SamplingConfig = SamplingConfig(temperature=0.0)
    """Decoding: temperature 0 is greedy."""
    dtype: str = "float32"
    """Parameter and compute dtype."""
    seed: int = 0
    """Sampling seed."""

    def __post_init__(self):
        positive(self, "max_new_tokens")
        require(self, "prompts", len(self.prompts) > 0, "give at least one prompt")
        require(self, "dtype", self.dtype in DTYPES, f"must be one of {list(DTYPES)}")


def register(sub) -> None:
    p = sub.add_parser("chat", help="chat-complete prompts and report throughput")
    p.add_argument("config", nargs="?", help="YAML file mirroring ChatConfig")
    p.add_argument("overrides", nargs="*", help="key.path=value overrides")
    p.set_defaults(func=run)


def run(args) -> int:
    from jaxalign import config as cfg

    config = cfg.load(ChatConfig, args.config, args.overrides)
    chat(config)
    return 0


def chat(config: ChatConfig) -> list[str]:
    """Generates replies for `config.prompts`; prints them with load, compile and decode timings."""
    from jaxalign import models, tokenizer
    from jaxalign.sampling import Sampler

    t0 = time.perf_counter()
    tok = tokenizer.load(config.model)
    tokenizer.require_chat_template(tok, config.model)
    model = models.load(config.model, dtype=config.dtype)
    tokenizer.check_vocab(tok, model.config.vocab_size, config.model, config.model)
    t_load = time.perf_counter() - t0
    print(f"loaded {config.model}: {model.config.architecture}, {model.config.num_params() / 1e6:.1f}M "
          f"parameters, {config.dtype} ({t_load:.1f}s)")
    prompts = []
    for text in config.prompts:
        messages = ([{"role": "system", "content": config.system}] if config.system else [])
        messages.append({"role": "user", "content": text})
        prompts.append(tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                               return_dict=False))
    sampler = Sampler(model, tok)
    kw = dict(max_new_tokens=config.max_new_tokens, seed=config.seed)
    t0 = time.perf_counter()
    sampler.generate(prompts, config.sampling, **kw)  # compiles the prefill and decode buckets
    t_compile = time.perf_counter() - t0
    t0 = time.perf_counter()
    outs = sampler.generate(prompts, config.sampling, **kw)
    t_gen = time.perf_counter() - t0
    for text, out in zip(config.prompts, outs):
        print(f"\n>>> {text}\n{tok.decode(out.tokens, skip_special_tokens=True).strip()}"
              f"\n[{len(out.tokens)} tokens, stop: {out.stop_reason}]")
    n = sum(len(o.tokens) for o in outs)
    print(f"\nfirst call (with compilation): {t_compile:.1f}s; warm: {n} tokens in {t_gen:.2f}s = "
          f"{n / t_gen:.1f} tokens/s (batch {len(prompts)}, prefill included)")
    return [o.text for o in outs]
