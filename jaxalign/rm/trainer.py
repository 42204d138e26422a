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

import jax
import numpy as np
from flax import nnx

from jaxalign import config as cfglib
from jaxalign import distributed, models, sharding, tokenizer
from jaxalign.data import PreferencePair, read_jsonl
from jaxalign.data.checks import DataError
from jaxalign.rewards.sentence.encode import with_end_token
from jaxalign.rewards.sentence.model import ResponseRewardModel, SentenceRewardModel
from jaxalign.rm.batching import EncodedPairs, encode_pairs, eval_order, make_batch
from jaxalign.rm.benchmark import gsm8k_benchmark
from jaxalign.rm.config import RMConfig, RMDataConfig
from jaxalign.rm.evaluation import localisation, pairwise_accuracy
from jaxalign.rm.step import (
    make_rm_scorer,
    make_rm_step,
    pair_loss,
    response_pair_scores,
    sentence_pair_scores,
    split_trainable,
)
from jaxalign.runlog.files import write_text_atomic
from jaxalign.train.batches import BatchOrder, OrderedBatches
from jaxalign.train.loop import run_loop
from jaxalign.train.optim import decay_mask, learning_rate_schedule, make_optimizer
from jaxalign.train.run import compile_scorer, compile_step
from jaxalign.train.rundir import RunDir, check_run_dir
from jaxalign.train.state import init_train_state

log = logging.getLogger(__name__)


def build_reward_model(config: RMConfig):
    """(reward model, tokenizer, END id or None) as `config` describes, heads freshly initialised."""
    source = config.tokenizer or config.model
    tok = tokenizer.load(source)
    tokenizer.require_chat_template(tok, source)
    end_id = None
    if config.model:
        backbone = models.load(config.model, dtype="float32", compute_dtype=config.run.compute_dtype)
        tokenizer.check_vocab(tok, backbone.config.vocab_size, source, config.model)
        if config.kind == "sentence":
            backbone, end_id = with_end_token(backbone, tok)
    else:
        if config.kind == "sentence":
            from jaxalign.rewards.sentence.encode import add_end_token

            end_id = add_end_token(tok)
        init = dataclasses.replace(config.init, vocab_size=len(tok), dtype=config.run.compute_dtype,
                                   param_dtype="float32")
        backbone = models.init_model(init, seed=config.run.seed)
    backbone = models.replace_config(backbone, remat=config.run.remat, attention=config.run.attention)
    rngs = nnx.Rngs(config.run.seed + 1)
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


def rm_scorer(graphdef, config: RMConfig, params_frozen, mesh):
    """The evaluation scorer `batch -> scores`, compiled under `mesh` with the training rules."""
    score = make_rm_scorer(graphdef, scores_fn(config))
    return compile_scorer(lambda pf, b: score(*pf, b), params_frozen, mesh, sharding.TRAIN_RULES)


def evaluate_encoded(score, encoded: EncodedPairs, *, batch_size: int, pad_id: int = 0,
                     length_multiple: int = 64, ends_multiple: int = 8, make=None) -> dict:
    """Pairwise accuracy (overall, per category) and, for the sentence model, localisation.

    `score(batch)` scores a batch (`rm_scorer`: compiled once under the mesh, parameters placed).
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
        out = jax.device_get(score(make(idx, pairs_per_batch=batch_size)))
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
    run = config.run
    distributed.initialize(run.distributed)  # before any device is touched
    check_run_dir(run.run_dir)
    t_start = time.perf_counter()
    train_pairs, test_pairs = load_pairs(config.data, run.seed)
    rm, tok, end_id = build_reward_model(config)
    train_enc, test_enc = encode(config, train_pairs, tok, end_id), encode(config, test_pairs, tok, end_id)
    for name, enc, pairs in (("train", train_enc, train_pairs), ("test", test_enc, test_pairs)):
        if not len(enc):
            raise DataError(f"data.{name}: none of its {len(pairs)} pairs fits data.max_len={config.data.max_len} "
                            "tokens")
    order = BatchOrder(len(train_enc), config.batch_size, 1, run.seed)
    # steps_per_epoch fails here, before the run directory is taken, when the pairs cannot fill one batch
    log.info("RM data: %d train / %d test pairs, %d steps per epoch", len(train_enc), len(test_enc),
             order.steps_per_epoch)
    with RunDir(run.run_dir, config, resume=resume, allow_config_change=allow_config_change):
        return _train(config, rm, tok, end_id, train_enc, test_enc, order, resume, allow_config_change, t_start)


def _train(config: RMConfig, rm, tok, end_id, train_enc: EncodedPairs, test_enc: EncodedPairs, order, resume: bool,
           allow_config_change: bool, t_start: float) -> dict:
    from jaxalign.runlog import MetricsLogger

    run, pad_id = config.run, tok.pad_token_id or 0
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
    mesh = sharding.make_mesh(run.mesh)
    step = make_rm_step(graphdef, optimizer, loss_fn, learning_rate_schedule(config.optim, total))
    step_fn, state = compile_step(step, init_train_state(params, optimizer, frozen), mesh, sharding.TRAIN_RULES,
                                  batch_axis=0)
    layout = {"pairs": len(train_enc), "steps_per_epoch": order.steps_per_epoch}
    source = OrderedBatches(order, config.epochs, lambda idx: train_batch(idx[0], pairs_per_batch=config.batch_size),
                            layout=layout, what="data.train", allow_change=allow_config_change,
                            tokens=lambda b: int(b["attention_mask"].sum()) if "attention_mask" in b else None)
    loop = run_loop(run, name=f"rm-{config.kind}", total=total, state=state, step_fn=step_fn, source=source,
                    resume=resume, extra={"end_id": end_id})
    state = loop.state
    score = rm_scorer(graphdef, config, (state.params, state.frozen), mesh)
    t_eval = time.perf_counter()
    result = evaluate_encoded(score, test_enc, batch_size=config.eval_batch_size,
                              pad_id=pad_id, length_multiple=config.data.length_multiple,
                              ends_multiple=config.data.ends_multiple, make=test_batch)
    eval_seconds = time.perf_counter() - t_eval
    flat = {"accuracy": result["accuracy"], **{f"accuracy_{c}": v["accuracy"]
                                               for c, v in result["by_category"].items()}}
    flat.update({k: result[k] for k in ("localisation", "localisation_chance") if k in result})
    with MetricsLogger(run.run_dir) as logger:
        logger.log(loop.step, flat, prefix="eval")
    summary = {"kind": config.kind, "steps": loop.step, "train_pairs": len(train_enc),
               "test_pairs": len(test_enc), "train_seconds": loop.seconds, "eval_seconds": eval_seconds,
               "total_seconds": time.perf_counter() - t_start, "final_train": loop.metrics,
               "eval": {k: v for k, v in result.items() if k != "scores"}, "run_dir": run.run_dir}
    if features:
        summary["features"] = features
    if distributed.is_main():
        write_text_atomic(os.path.join(run.run_dir, "eval.json"),
                          json.dumps({**summary, "ids": [p.id for p in test_enc.pairs], "scores": result["scores"]},
                                     indent=1))
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
    template = init_train_state(params, optimizer, saved_frozen)
    with CheckpointManager(os.path.join(run_dir, "checkpoints")) as ckpt:
        _, state, _ = ckpt.restore(template)
    return config, nnx.merge(graphdef, state.params, frozen if config.cache_features else state.frozen), tok, end_id


def evaluate_model(config: RMConfig, rm, tok, end_id, pairs) -> dict:
    """Pairwise accuracy (and localisation for the sentence model) of a reward model on `pairs`."""
    enc = encode(config, pairs, tok, end_id)
    if not len(enc):
        raise ValueError(f"no pair fits max_len={config.data.max_len} tokens")
    graphdef, params, frozen = split_trainable(rm, config.freeze_backbone)
    score = rm_scorer(graphdef, config, (params, frozen), sharding.make_mesh(config.run.mesh))
    return evaluate_encoded(score, enc, batch_size=config.eval_batch_size,
                            pad_id=tok.pad_token_id or 0, length_multiple=config.data.length_multiple,
                            ends_multiple=config.data.ends_multiple)


def sentence_reward(run_dir: str, policy_tokenizer, *, batch_size: int = 8):
    """The latest checkpoint of a `jaxalign rm train` run (kind "sentence") as a reward function over
    the policy's trajectories (`jaxalign.rewards.SentenceReward`), with the run's own scoring options."""
    from jaxalign.rewards.sentence.reward import SentenceReward

    config, rm, tok, end_id = load_trained(run_dir)
    if config.kind != "sentence":
        raise ValueError(f"{run_dir}: a {config.kind!r} reward model has no sentence rewards; train with kind=sentence")
    return SentenceReward(rm, tok, end_id, policy_tokenizer, splitter=config.data.splitter,
                          system_prompt=config.data.system_prompt, use_attention=config.use_attention,
                          use_rope=config.use_rope, rope_theta=config.rope_theta, batch_size=batch_size)
