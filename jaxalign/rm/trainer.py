"""`jaxalign rm train`: Bradley-Terry training of the sentence-level or response-level reward model.

Host work only (data, logging, checkpoint cadence, evaluation); the math is in `aggregate` and `step`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import time
from typing import Literal

import jax
import numpy as np
from flax import nnx

from jaxalign import config as cfglib
from jaxalign import models, sharding, tokenizer
from jaxalign.config import non_negative, positive, require
from jaxalign.data import PreferencePair, read_jsonl
from jaxalign.data.checks import DataError
from jaxalign.models import ModelConfig
from jaxalign.rewards.sentence.encode import with_end_token
from jaxalign.rewards.sentence.model import ResponseRewardModel, SentenceRewardModel
from jaxalign.rm.batching import EncodedPairs, encode_pairs, eval_order, make_batch
from jaxalign.rm.benchmark import KINDS, gsm8k_benchmark
from jaxalign.rm.evaluation import localisation, pairwise_accuracy
from jaxalign.rm.step import (
    init_rm_state,
    make_rm_scorer,
    make_rm_step,
    pair_loss,
    response_pair_scores,
    sentence_pair_scores,
    split_trainable,
)
from jaxalign.train.optim import OptimConfig, decay_mask, make_optimizer
from jaxalign.train.run import compile_step
from jaxalign.train.rundir import RunDir, check_run_dir

log = logging.getLogger(__name__)


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
    seed: int = 0
    """Head and from-scratch backbone init, data order, subsets."""
    run_dir: str = "runs/rm"
    save_every: int = 200
    """Checkpoint cadence in steps (also saved at the end)."""
    keep_checkpoints: int = 2
    log_every: int = 10
    eval_batch_size: int = 16
    """Pairs per evaluation batch."""
    mesh: sharding.MeshConfig = sharding.MeshConfig()
    compute_dtype: Literal["float32", "bfloat16"] = "float32"
    """Activation dtype of the backbone (parameters stay float32)."""

    def __post_init__(self):
        require(self, "model", bool(self.model) or self.init is not None,
                "set `model` (a checkpoint) or `init` (a ModelConfig to train from scratch)")
        require(self, "head_dim", self.head_dim > 0 and self.head_dim % 2 == 0,
                "must be positive and even (rotary pairs)")
        positive(self, "batch_size", "epochs", "eval_batch_size", "save_every", "keep_checkpoints", "log_every",
                 "rope_theta")
        non_negative(self, "max_steps", "reward_penalty")
        if self.cache_features and not self.freeze_backbone:
            raise ValueError("RMConfig.cache_features needs RMConfig.freeze_backbone: cached backbone features "
                             "are only valid while the backbone does not train")
        if self.feature_batch_rows <= 0:
            raise ValueError(f"RMConfig.feature_batch_rows must be positive, got {self.feature_batch_rows}")


def build_reward_model(config: RMConfig):
    """(reward model, tokenizer, END id or None) as `config` describes, heads freshly initialised."""
    source = config.tokenizer or config.model
    tok = tokenizer.load(source)
    tokenizer.require_chat_template(tok, source)
    end_id = None
    if config.model:
        backbone = models.load(config.model, dtype="float32", compute_dtype=config.compute_dtype)
        tokenizer.check_vocab(tok, backbone.config.vocab_size, source, config.model)
        if config.kind == "sentence":
            backbone, end_id = with_end_token(backbone, tok)
    else:
        if config.kind == "sentence":
            from jaxalign.rewards.sentence.encode import add_end_token

            end_id = add_end_token(tok)
        init = dataclasses.replace(config.init, vocab_size=len(tok), dtype=config.compute_dtype, param_dtype="float32")
        backbone = models.init_model(init, seed=config.seed)
    rngs = nnx.Rngs(config.seed + 1)
    if config.kind == "sentence":
        return SentenceRewardModel(backbone, head_dim=config.head_dim, rngs=rngs), tok, end_id
    return ResponseRewardModel(backbone, rngs=rngs), tok, end_id


def scores_fn(config: RMConfig):
    """The pair-scoring function of `config.kind` with its options bound."""
    if config.kind == "sentence":
        return functools.partial(sentence_pair_scores, use_attention=config.use_attention, use_rope=config.use_rope,
                                 rope_theta=config.rope_theta)
    return response_pair_scores


def _subset(pairs: list[PreferencePair], n: int, seed: int) -> list[PreferencePair]:
    if not n or n >= len(pairs):
        return pairs
    keep = np.sort(np.random.default_rng(seed).permutation(len(pairs))[:n])
    return [pairs[i] for i in keep]


def load_pairs(data: RMDataConfig, seed: int) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """(train, test) pairs: from JSONL where given, else the built-in GSM8K benchmark; subsets applied."""
    train = read_jsonl(data.train, "preferences") if data.train else None
    test = read_jsonl(data.test, "preferences") if data.test else None
    for name, path, pairs in (("train", data.train, train), ("test", data.test, test)):
        if pairs is not None and not pairs:
            raise DataError(f"data.{name}: {path} holds no preference pairs")
    if train is None or test is None:
        b_train, b_test = gsm8k_benchmark(test_fraction=data.test_fraction, seed=data.benchmark_seed, kinds=data.kinds)
        train = b_train if train is None else train
        test = b_test if test is None else test
    return _subset(list(train), data.max_train_pairs, seed), _subset(list(test), data.max_test_pairs, seed + 1)


def encode(config: RMConfig, pairs, tok, end_id) -> EncodedPairs:
    """`encode_pairs` with the options of `config`."""
    return encode_pairs(pairs, tok, kind=config.kind, end_id=end_id, splitter=config.data.splitter,
                        system_prompt=config.data.system_prompt, max_len=config.data.max_len)


def evaluate_encoded(score, params, frozen, encoded: EncodedPairs, *, batch_size: int, pad_id: int = 0,
                     length_multiple: int = 64, ends_multiple: int = 8, make=None) -> dict:
    """Pairwise accuracy (overall, per category) and, for the sentence model, localisation.

    `make(indices, pairs_per_batch=...)` builds a batch of `encoded`'s pairs (default: token batches,
    `make_batch`; cached runs pass `features.feature_batch` over the pairs' features).
    """
    if make is None:
        make = functools.partial(make_batch, encoded, pad_id=pad_id, length_multiple=length_multiple,
                                 ends_multiple=ends_multiple)
    order = eval_order(encoded)
    chosen = np.zeros(len(encoded))
    rejected = np.zeros(len(encoded))
    located, wrong = [], []
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        out = jax.device_get(score(params, frozen, make(idx, pairs_per_batch=batch_size)))
        chosen[idx], rejected[idx] = out["chosen"][:len(idx)], out["rejected"][:len(idx)]
        if "sentence_rewards" not in out:
            continue
        for j, i in enumerate(idx):
            w = encoded.pairs[i].meta.get("wrong_sentence")
            n = encoded.rows[i][1].num_ends - 2  # sentences only: drop the prompt and end-of-turn slots
            if isinstance(w, int) and 0 <= w < n:
                located.append(np.asarray(out["sentence_rewards"][j, 1, 1:1 + n]))
                wrong.append(w)
    result = pairwise_accuracy(chosen, rejected, [p.category for p in encoded.pairs])
    if located:
        result.update(localisation(located, wrong))
    result["scores"] = {"chosen": chosen.tolist(), "rejected": rejected.tolist()}
    return result


def train_rm(config: RMConfig, *, resume: bool = True, allow_config_change: bool = False) -> dict:
    """Trains (or resumes) a reward model, then evaluates it on the test pairs; returns a summary.

    Inputs (run_dir, pairs, tokenizer, backbone) are checked before the run directory is touched;
    then the run holds it (`RunDir`: lock, config history, refused config changes on resume).
    Writes run_dir/config.yaml, checkpoints, metrics.jsonl (train/* and eval/*) and eval.json; with
    `cache_features`, also the feature cache, and checkpoints hold the heads only.
    """
    from jaxalign.sft.batching import BatchOrder

    check_run_dir(config.run_dir)
    t_start = time.perf_counter()
    train_pairs, test_pairs = load_pairs(config.data, config.seed)
    rm, tok, end_id = build_reward_model(config)
    train_enc, test_enc = encode(config, train_pairs, tok, end_id), encode(config, test_pairs, tok, end_id)
    for name, enc, pairs in (("train", train_enc, train_pairs), ("test", test_enc, test_pairs)):
        if not len(enc):
            raise DataError(f"data.{name}: none of its {len(pairs)} pairs fits data.max_len={config.data.max_len} "
                            "tokens")
    order = BatchOrder(len(train_enc), config.batch_size, 1, config.seed)
    # steps_per_epoch fails here, before the run directory is taken, when the pairs cannot fill one batch
    log.info("RM data: %d train / %d test pairs, %d steps per epoch", len(train_enc), len(test_enc),
             order.steps_per_epoch)
    with RunDir(config.run_dir, config, resume=resume, allow_config_change=allow_config_change):
        return _train(config, rm, tok, end_id, train_enc, test_enc, order, resume, t_start)


def _train(config: RMConfig, rm, tok, end_id, train_enc: EncodedPairs, test_enc: EncodedPairs, order, resume: bool,
           t_start: float) -> dict:
    from jaxalign.checkpoint import CheckpointManager
    from jaxalign.runlog import MetricsLogger, Progress, check_finite, format_metrics

    pad_id = tok.pad_token_id or 0
    total = config.epochs * order.steps_per_epoch
    total = min(total, config.max_steps) if config.max_steps else total
    full_graphdef, params, frozen = split_trainable(rm, config.freeze_backbone)
    graphdef, backbone = full_graphdef, frozen
    train_batch = functools.partial(make_batch, train_enc, pad_id=pad_id, length_multiple=config.data.length_multiple,
                                    ends_multiple=config.data.ends_multiple)
    test_batch, features = None, {}
    if config.cache_features:  # the step and the checkpoints see the heads only
        from jaxalign.rm import features as fx

        train_fx, test_fx = fx.cached_pair_features(config, rm, train_enc, test_enc, pad_id=pad_id)
        features = {"train": train_fx.stats, "test": test_fx.stats}
        train_batch = functools.partial(fx.feature_batch, train_fx, ends_multiple=config.data.ends_multiple)
        test_batch = functools.partial(fx.feature_batch, test_fx, ends_multiple=config.data.ends_multiple)
        graphdef, params, frozen = fx.heads_only(rm)
    optimizer = make_optimizer(config.optim, total, mask=decay_mask(params))
    loss_fn = functools.partial(pair_loss, scores_fn(config), reward_penalty=config.reward_penalty)
    mesh = sharding.make_mesh(config.mesh)
    step_fn, state = compile_step(make_rm_step(graphdef, optimizer, loss_fn), init_rm_state(params, frozen, optimizer),
                                  mesh, sharding.TRAIN_RULES, batch_axis=0)
    ckpt = CheckpointManager(os.path.join(config.run_dir, "checkpoints"), keep=config.keep_checkpoints,
                             save_every=config.save_every, start_over=not resume)
    start_epoch = start_index = 0
    if resume and ckpt.latest_step() is not None:
        step0, state, extra = ckpt.restore(state)
        start_epoch, start_index = extra["epoch"], extra["index"]
        log.info("resumed from step %d (epoch %d, batch %d)", step0, start_epoch, start_index)
    logger = MetricsLogger(config.run_dir)
    logger.truncate_after(int(state.step))
    progress = Progress(total, f"rm-{config.kind}", initial=int(state.step))
    host: dict = {}
    t_train = time.perf_counter()
    try:
        for epoch, index, idx in order.iterate(start_epoch, start_index, config.epochs):
            step = int(state.step)
            if step >= total:
                break
            batch = train_batch(idx[0], pairs_per_batch=config.batch_size)
            state, metrics = step_fn(state, batch)
            step += 1
            progress.update(1, tokens=int(batch["attention_mask"].sum()) if "attention_mask" in batch else None)
            due_log = step % config.log_every == 0 or step == total
            due_save = ckpt.should_save(step) or step == total
            if due_log or due_save:
                host = {k: float(v) for k, v in jax.device_get(metrics).items()}
                check_finite(host, step)  # never checkpoint a NaN state
                host["epoch"] = epoch + (index + 1) / order.steps_per_epoch
                logger.log(step, host, prefix="train")
                if due_log:
                    log.info(format_metrics(step, host))
            if due_save:
                nxt = (epoch, index + 1) if index + 1 < order.steps_per_epoch else (epoch + 1, 0)
                ckpt.save(step, state, {"epoch": nxt[0], "index": nxt[1], "end_id": end_id})
        train_seconds = time.perf_counter() - t_train
        score = jax.jit(make_rm_scorer(graphdef, scores_fn(config)))
        t_eval = time.perf_counter()
        result = evaluate_encoded(score, state.params, state.frozen, test_enc, batch_size=config.eval_batch_size,
                                  pad_id=pad_id, length_multiple=config.data.length_multiple,
                                  ends_multiple=config.data.ends_multiple, make=test_batch)
        eval_seconds = time.perf_counter() - t_eval
        flat = {"accuracy": result["accuracy"], **{f"accuracy_{c}": v["accuracy"]
                                                   for c, v in result["by_category"].items()}}
        flat.update({k: result[k] for k in ("localisation", "localisation_chance") if k in result})
        logger.log(int(state.step), flat, prefix="eval")
    finally:
        ckpt.wait()
        progress.close()
        logger.close()
    summary = {"kind": config.kind, "steps": int(state.step), "train_pairs": len(train_enc),
               "test_pairs": len(test_enc), "train_seconds": train_seconds, "eval_seconds": eval_seconds,
               "total_seconds": time.perf_counter() - t_start, "final_train": host,
               "eval": {k: v for k, v in result.items() if k != "scores"}, "run_dir": config.run_dir}
    if features:
        summary["features"] = features
    with open(os.path.join(config.run_dir, "eval.json"), "w") as f:
        json.dump({**summary, "ids": [p.id for p in test_enc.pairs], "scores": result["scores"]}, f, indent=1)
    frozen_out = backbone if config.cache_features else state.frozen
    summary["model"] = nnx.merge(full_graphdef, jax.device_get(state.params), jax.device_get(frozen_out))
    return summary


def load_trained(run_dir: str):
    """(config, reward model with the latest checkpoint's weights, tokenizer, END id) of a training run."""
    from jaxalign.checkpoint import CheckpointManager

    config = cfglib.load(RMConfig, os.path.join(run_dir, "config.yaml"))
    rm, tok, end_id = build_reward_model(config)
    graphdef, params, frozen = split_trainable(rm, config.freeze_backbone)
    saved_frozen = frozen
    if config.cache_features:  # heads-only checkpoints; the frozen backbone is the one just built
        from jaxalign.rm.features import heads_only

        saved_frozen = heads_only(rm)[2]
    optimizer = make_optimizer(config.optim, 1, mask=decay_mask(params))
    template = init_rm_state(params, saved_frozen, optimizer)
    _, state, _ = CheckpointManager(os.path.join(run_dir, "checkpoints")).restore(template)
    return config, nnx.merge(graphdef, state.params, frozen if config.cache_features else state.frozen), tok, end_id


def evaluate_model(config: RMConfig, rm, tok, end_id, pairs) -> dict:
    """Pairwise accuracy (and localisation for the sentence model) of a reward model on `pairs`."""
    enc = encode(config, pairs, tok, end_id)
    if not len(enc):
        raise ValueError(f"no pair fits max_len={config.data.max_len} tokens")
    graphdef, params, frozen = split_trainable(rm, config.freeze_backbone)
    score = jax.jit(make_rm_scorer(graphdef, scores_fn(config)))
    return evaluate_encoded(score, params, frozen, enc, batch_size=config.eval_batch_size,
                            pad_id=tok.pad_token_id or 0, length_multiple=config.data.length_multiple,
                            ends_multiple=config.data.ends_multiple)
