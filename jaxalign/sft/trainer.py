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

from jaxalign import distributed, models, sharding, tokenizer
from jaxalign.config import non_negative, positive, require
from jaxalign.data.checks import DataError
from jaxalign.distributed import DistributedConfig
from jaxalign.models import ModelConfig
from jaxalign.sft.batching import BatchOrder, batch_from, pack
from jaxalign.sft.render import render_messages
from jaxalign.sft.step import init_train_state, make_sft_step
from jaxalign.train.optim import OptimConfig, decay_mask, make_optimizer
from jaxalign.train.run import compile_step
from jaxalign.train.rundir import RunDir, check_run_dir

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

    def __post_init__(self):
        positive(self, "seq_len")
        non_negative(self, "min_tool_calls")
        require(self, "top_k", self.top_k is None or self.top_k > 0, "must be > 0 (or null: all)")


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
        require(self, "model", bool(self.model) or self.init is not None,
                "set `model` (a checkpoint) or `init` (a ModelConfig to train from scratch)")
        positive(self, "batch_size", "grad_accum", "epochs", "save_every", "keep_checkpoints", "log_every")
        non_negative(self, "max_steps")


def load_policy(model_path: str, init: ModelConfig | None, compute_dtype: str, seed: int):
    """A checkpoint, or a fresh model from `init`, with the requested compute dtype."""
    if model_path:
        model = models.load(model_path, dtype="float32", compute_dtype=compute_dtype)
    else:
        model = models.init_model(dataclasses.replace(init, dtype=compute_dtype, param_dtype="float32"), seed=seed)
    return model


def read_trajectories(data: SFTDataConfig) -> list:
    """The trajectories of `data.trajectories` that pass the density selection (never empty)."""
    from jaxalign.data import read_jsonl, select_by_density

    path = data.trajectories
    if not path:
        raise DataError("data.trajectories is empty: set it to a JSONL file of tool-use trajectories")
    if not os.path.isfile(path):
        what = "is a directory, not a file" if os.path.isdir(path) else "does not exist"
        raise DataError(f"data.trajectories: {path} {what}; synthesise tool-use trajectories first, e.g. "
                        f"`jaxalign data synth {path} --n 200`, or point it at your own JSONL (schema: jaxalign.data)")
    records = read_jsonl(path, "trajectories")
    chosen = select_by_density(records, min_tool_calls=data.min_tool_calls, top_k=data.top_k)
    if not chosen:
        raise DataError(f"{path}: none of its {len(records)} trajectories has >= {data.min_tool_calls} tool calls "
                        "(data.min_tool_calls)")
    return chosen


def prepare_rows(config: SFTConfig, tok, chosen: list | None = None):
    """Renders and packs the trajectories (read from the config's file unless given)."""
    chosen = read_trajectories(config.data) if chosen is None else chosen
    examples = [render_messages(r.to_dict()["messages"], tok, config.data.tool_format, r.id) for r in chosen]
    rows = pack(examples, config.data.seq_len, pad_id=tok.pad_token_id or 0, packing=config.data.packing)
    if not len(rows.input_ids):
        raise DataError(f"{config.data.trajectories}: no trajectory fits data.seq_len={config.data.seq_len} tokens")
    calls = np.mean([e.tool_calls for e in examples])
    log.info("SFT data: %d trajectories (%.1f tool calls each) -> %d rows of %d tokens", len(examples), calls,
             len(rows), config.data.seq_len)
    return rows, {"trajectories": len(examples), "tool_calls_per_traj": float(calls)}


def train_sft(config: SFTConfig, *, resume: bool = True, allow_config_change: bool = False) -> dict:
    """Runs (or resumes) SFT; returns a summary with final metrics and paths.

    Everything that can be wrong with the inputs (run_dir, tokenizer, data, model) is checked before
    the run directory is touched; then the run holds its directory (`RunDir`: a lock, the config
    history, and on resume a refusal of changes that break exactness unless `allow_config_change`).
    """
    distributed.initialize(config.distributed)  # before any device is touched
    check_run_dir(config.run_dir)
    chosen = read_trajectories(config.data)
    source = config.tokenizer or config.model
    tok = tokenizer.load(source)
    tokenizer.require_chat_template(tok, source)
    model = load_policy(config.model, config.init, config.compute_dtype, config.seed)
    tokenizer.check_vocab(tok, model.config.vocab_size, source, config.model or "init")
    if config.remat is not None:
        model = models.replace_config(model, remat=config.remat)
    rows, data_stats = prepare_rows(config, tok, chosen)
    order = BatchOrder(len(rows), config.batch_size, config.grad_accum, config.seed)
    # What the data position means: a resumed run must see the same rows in the same order.
    layout = {"rows": len(rows), "steps_per_epoch": order.steps_per_epoch,  # fails here if rows < one step
              "data_sha256": file_digest(config.data.trajectories)}
    with RunDir(config.run_dir, config, resume=resume, allow_config_change=allow_config_change):
        return _run(config, tok, model, rows, order, data_stats, layout, resume, allow_config_change)


def file_digest(path: str) -> str:
    """sha256 of a file's bytes (a data file can change under an unchanged config path)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _run(config: SFTConfig, tok, model, rows, order: BatchOrder, data_stats: dict, layout: dict, resume: bool,
         allow_config_change: bool):
    from jaxalign.checkpoint import CheckpointManager
    from jaxalign.runlog import MetricsLogger, Progress, check_finite, format_metrics

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
        if extra.get("layout", layout) != layout:
            change = f"the training rows changed since step {step0} ({extra['layout']} -> {layout})"
            if not allow_config_change:
                raise DataError(f"{config.data.trajectories}: {change}, so resuming would not be exact; pass "
                                "--allow-config-change to resume anyway, or --no-resume to start over")
            log.warning("%s: epoch %d restarts from its first batch", change, start_epoch)
            start_index = 0
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
                ckpt.save(step, state, {"epoch": nxt[0], "index": nxt[1], "data": data_stats, "layout": layout})
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
