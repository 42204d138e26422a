"""`jaxalign sft`: the cold-start trainer (host loop: data, logging, checkpoint cadence)."""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import ClassVar, Literal

import numpy as np
from flax import nnx

from jaxalign import distributed, models, sharding, tokenizer
from jaxalign.config import non_negative, positive, require
from jaxalign.data.checks import DataError
from jaxalign.models import ModelConfig
from jaxalign.sft.batching import batch_from, pack
from jaxalign.sft.render import render_messages
from jaxalign.sft.step import make_sft_step
from jaxalign.train.batches import BatchOrder, OrderedBatches
from jaxalign.train.config import MOVED_TO_RUN, RunConfig
from jaxalign.train.loop import run_loop
from jaxalign.train.optim import OptimConfig, decay_mask, learning_rate_schedule, make_optimizer
from jaxalign.train.run import compile_step
from jaxalign.train.rundir import RunDir, check_run_dir
from jaxalign.train.state import init_train_state

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
    run: RunConfig = RunConfig(run_dir="runs/sft", save_every=100, keep_checkpoints=3, log_every=10)
    """Run directory, cadences, seed (model init and data order), mesh, precision, export."""

    MOVED: ClassVar[dict[str, str]] = MOVED_TO_RUN

    def __post_init__(self):
        require(self, "model", bool(self.model) or self.init is not None,
                "set `model` (a checkpoint) or `init` (a ModelConfig to train from scratch)")
        positive(self, "batch_size", "grad_accum", "epochs")
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
    run = config.run
    distributed.initialize(run.distributed)  # before any device is touched
    check_run_dir(run.run_dir)
    chosen = read_trajectories(config.data)
    source = config.tokenizer or config.model
    tok = tokenizer.load(source)
    tokenizer.require_chat_template(tok, source)
    model = load_policy(config.model, config.init, run.compute_dtype, run.seed)
    tokenizer.check_vocab(tok, model.config.vocab_size, source, config.model or "init")
    model = models.replace_config(model, remat=run.remat, attention=run.attention)
    rows, data_stats = prepare_rows(config, tok, chosen)
    order = BatchOrder(len(rows), config.batch_size, config.grad_accum, run.seed)
    # What the data position means: a resumed run must see the same rows in the same order.
    layout = {"rows": len(rows), "steps_per_epoch": order.steps_per_epoch,  # fails here if rows < one step
              "data_sha256": file_digest(config.data.trajectories)}
    with RunDir(run.run_dir, config, resume=resume, allow_config_change=allow_config_change):
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
    run = config.run
    total = config.epochs * order.steps_per_epoch
    if config.max_steps:
        total = min(total, config.max_steps)
    graphdef, params = nnx.split(model)
    optimizer = make_optimizer(config.optim, total, mask=decay_mask(params))
    schedule = learning_rate_schedule(config.optim, total)
    mesh = sharding.make_mesh(run.mesh)
    step_fn, state = compile_step(make_sft_step(graphdef, optimizer, schedule=schedule),
                                  init_train_state(params, optimizer), mesh, sharding.TRAIN_RULES)
    # Every host renders the same rows (cheap, deterministic) but materialises only its own slice.
    lo, hi = distributed.batch_rows(mesh, sharding.TRAIN_RULES, config.batch_size)
    source = OrderedBatches(order, config.epochs, lambda idx: batch_from(rows, idx[:, lo:hi]), layout=layout,
                            what=config.data.trajectories, allow_change=allow_config_change,
                            tokens=lambda batch: int(batch["attention_mask"].sum()))
    result = run_loop(run, name="sft", total=total, state=state, step_fn=step_fn, source=source, resume=resume,
                      extra={"data": data_stats}, tokenizer=tok,
                      export=lambda s: nnx.merge(graphdef, distributed.to_host(s.params)))
    summary = {"steps": result.step, "seconds": result.seconds, **data_stats,
               "final_loss": result.metrics.get("loss"), "run_dir": run.run_dir}
    if result.hf_dir:
        summary["hf_dir"] = result.hf_dir
    summary["model"] = nnx.merge(graphdef, distributed.to_host(result.state.params))
    return summary
