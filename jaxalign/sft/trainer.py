"""`jaxalign sft`: the cold-start trainer (host loop: data, logging, checkpoint cadence)."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Literal

import jax
import numpy as np
from flax import nnx

from jaxalign import config as cfglib
from jaxalign import distributed, models, sharding, tokenizer
from jaxalign.distributed import DistributedConfig
from jaxalign.models import ModelConfig
from jaxalign.sft.batching import BatchOrder, batch_from, pack
from jaxalign.sft.render import render_messages
from jaxalign.sft.step import init_train_state, make_sft_step
from jaxalign.train.optim import OptimConfig, decay_mask, make_optimizer
from jaxalign.train.run import compile_step

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SFTDataConfig:
    """Which trajectories, rendered how."""

    trajectories: str = ""
    """JSONL file of tool-use trajectories (schema: jaxalign.data)."""
    tool_format: Literal["markdown", "hermes"] = "markdown"
    """How tool calls and outputs are rendered (must match the RL rollout format)."""
    seq_len: int = 1024
    """Tokens per training row; longer trajectories are dropped (with a warning)."""
    packing: bool = True
    """Pack several trajectories per row (segment-masked attention) instead of padding each."""
    min_tool_calls: int = 0
    """Keep only trajectories with at least this many tool calls (interaction density)."""
    top_k: int | None = None
    """Then keep the k densest trajectories (ASTER: a small, interaction-dense set)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class SFTConfig:
    """Cold-start supervised fine-tuning on tool-use trajectories."""

    model: str = ""
    """Checkpoint to start from: HF directory, .gguf, packaged name; empty = from `init`."""
    init: ModelConfig | None = None
    """Architecture of a model trained from scratch (used when `model` is empty)."""
    tokenizer: str = ""
    """Tokenizer path (default: the model's)."""
    data: SFTDataConfig = SFTDataConfig()
    optim: OptimConfig = OptimConfig()
    batch_size: int = 8
    """Rows per micro-batch."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    epochs: int = 6
    max_steps: int = 0
    """Stop after this many steps (0: run all epochs)."""
    seed: int = 0
    """Model init and data order."""
    run_dir: str = "runs/sft"
    save_every: int = 100
    """Checkpoint cadence in steps (also saved at the end)."""
    keep_checkpoints: int = 3
    log_every: int = 10
    mesh: sharding.MeshConfig = sharding.MeshConfig()
    """Training mesh over all devices of all hosts (rules: sharding.TRAIN_RULES)."""
    distributed: DistributedConfig = DistributedConfig()
    """Multi-host start-up (empty: one process, or the JAXALIGN_* environment variables)."""
    compute_dtype: Literal["float32", "bfloat16"] = "float32"
    """Activation dtype (parameters and optimizer state stay float32)."""
    remat: Literal["none", "full", "dots"] | None = None
    """Rematerialise each block in the backward pass (None: keep the model config's setting)."""
    export_hf: bool = True
    """Write the final model as a Hugging Face directory to run_dir/hf."""

    def __post_init__(self):
        if not self.model and self.init is None:
            raise ValueError("SFTConfig: set `model` (a checkpoint) or `init` (a ModelConfig to train from scratch)")
        if self.batch_size <= 0 or self.grad_accum <= 0 or self.epochs <= 0:
            raise ValueError("SFTConfig: batch_size, grad_accum and epochs must be positive")


def load_policy(model_path: str, init: ModelConfig | None, compute_dtype: str, seed: int):
    """A checkpoint, or a fresh model from `init`, with the requested compute dtype."""
    if model_path:
        model = models.load(model_path, dtype="float32", compute_dtype=compute_dtype)
    else:
        model = models.init_model(dataclasses.replace(init, dtype=compute_dtype, param_dtype="float32"), seed=seed)
    return model


def prepare_rows(config: SFTConfig, tok):
    """Reads, selects by interaction density, renders and packs the trajectories."""
    from jaxalign.data import read_jsonl, select_by_density

    records = read_jsonl(config.data.trajectories, "trajectories")
    chosen = select_by_density(records, min_tool_calls=config.data.min_tool_calls, top_k=config.data.top_k)
    if not chosen:
        raise ValueError(f"{config.data.trajectories}: no trajectory has >= {config.data.min_tool_calls} tool calls")
    examples = [render_messages(r.to_dict()["messages"], tok, config.data.tool_format, r.id) for r in chosen]
    rows = pack(examples, config.data.seq_len, pad_id=tok.pad_token_id or 0, packing=config.data.packing)
    calls = np.mean([e.tool_calls for e in examples])
    log.info("SFT data: %d trajectories (%.1f tool calls each) -> %d rows of %d tokens", len(examples), calls,
             len(rows), config.data.seq_len)
    return rows, {"trajectories": len(examples), "tool_calls_per_traj": float(calls)}


def train_sft(config: SFTConfig, *, resume: bool = True) -> dict:
    """Runs (or resumes) SFT; returns a summary with final metrics and paths."""
    from jaxalign.checkpoint import CheckpointManager
    from jaxalign.runlog import MetricsLogger, Progress, check_finite, format_metrics

    distributed.initialize(config.distributed)  # before any device is touched
    os.makedirs(config.run_dir, exist_ok=True)
    if distributed.is_main():
        cfglib.dump(config, os.path.join(config.run_dir, "config.yaml"))
    tok = tokenizer.load(config.tokenizer or config.model)
    model = load_policy(config.model, config.init, config.compute_dtype, config.seed)
    if config.remat is not None:
        model = models.replace_config(model, remat=config.remat)
    rows, data_stats = prepare_rows(config, tok)
    order = BatchOrder(len(rows), config.batch_size, config.grad_accum, config.seed)
    total = config.epochs * order.steps_per_epoch
    if config.max_steps:
        total = min(total, config.max_steps)
    graphdef, params = nnx.split(model)
    optimizer = make_optimizer(config.optim, total, mask=decay_mask(params))
    mesh = sharding.make_mesh(config.mesh)
    step_fn, state = compile_step(make_sft_step(graphdef, optimizer), init_train_state(params, optimizer), mesh,
                                  sharding.TRAIN_RULES)
    # Every host renders the same rows (cheap, deterministic) but materialises only its own slice.
    lo, hi = distributed.batch_rows(mesh, sharding.TRAIN_RULES, config.batch_size)
    ckpt = CheckpointManager(os.path.join(config.run_dir, "checkpoints"), keep=config.keep_checkpoints,
                             save_every=config.save_every, start_over=not resume)
    start_epoch = start_index = 0
    if resume and ckpt.latest_step() is not None:
        step0, state, extra = ckpt.restore(state)
        start_epoch, start_index = extra["epoch"], extra["index"]
        log.info("resumed from step %d (epoch %d, batch %d)", step0, start_epoch, start_index)
    start = int(state.step)
    logger = MetricsLogger(config.run_dir)
    logger.truncate_after(start)
    progress = Progress(total, "sft", initial=start)
    metrics = {}
    t0 = time.perf_counter()
    try:
        for epoch, index, idx in order.iterate(start_epoch, start_index, config.epochs):
            step = int(state.step)
            if step >= total:
                break
            batch = batch_from(rows, idx[:, lo:hi])
            state, metrics = step_fn(state, batch)
            step += 1
            tokens = int(batch["attention_mask"].sum())
            progress.update(1, tokens=tokens)
            due_log = step % config.log_every == 0 or step == total
            due_save = ckpt.should_save(step) or step == total
            if due_log or due_save:
                host = {k: float(v) for k, v in jax.device_get(metrics).items()}
                check_finite(host, step)  # never checkpoint a NaN state
                host["lr"] = float(optimizer_lr(config, total, step))
                host["epoch"] = epoch + (index + 1) / order.steps_per_epoch
                logger.log(step, host, prefix="train")
                if due_log:
                    log.info(format_metrics(step, host))
            if due_save:
                nxt = (epoch, index + 1) if index + 1 < order.steps_per_epoch else (epoch + 1, 0)
                ckpt.save(step, state, {"epoch": nxt[0], "index": nxt[1], "data": data_stats})
    finally:
        ckpt.wait()
        progress.close()
        logger.close()
    summary = {"steps": int(state.step), "seconds": time.perf_counter() - t0, **data_stats,
               "final_loss": float(jax.device_get(metrics.get("loss", np.nan))) if metrics else None,
               "run_dir": config.run_dir}
    final = nnx.merge(graphdef, distributed.to_host(state.params))
    if config.export_hf and distributed.is_main():
        summary["hf_dir"] = models.save_hf(final, os.path.join(config.run_dir, "hf"), tokenizer=tok)
    summary["model"] = final
    return summary


def optimizer_lr(config: SFTConfig, total: int, step: int) -> float:
    from jaxalign.train.optim import learning_rate_schedule

    return learning_rate_schedule(config.optim, total)(step - 1)
