"""The host loop every trainer runs: resume, steps, cadence, metrics, NaN stop, checkpoints, export.

    result = run_loop(config.run, name="sft", total=total, state=state, step_fn=step_fn,
                      source=OrderedBatches(...), resume=resume)

A trainer supplies three things:

* `state`: the placed train state (a pytree; `TrainState` for every trainer here).
* `step_fn(state, batch) -> (state, metrics)`: a jitted update (SFT, reward models) or host code
  around jitted updates (GRPO's mini-batches). Metrics may stay on the device: the loop reads (and
  writes) them only at the log cadence and at a save (no device sync per step), or every step with
  `read_every_step` (GRPO, whose metrics are host values anyway); the console shows every log_every.
  Steps whose metrics were read (log cadence, saves) are written to metrics.jsonl.
* `source`: `next_batch(step) -> (batch, host metrics) | None`, `position() -> dict` (JSON, the
  position after the batches handed out so far) and `restore(position, step)`. SFT and the reward
  model use `jaxalign.train.batches.OrderedBatches`; GRPO's source is its rollout phase.

The step is counted on the host (`step` k is the k-th call of `step_fn`; checkpoints are named by
it). Metrics are checked for NaN/inf whenever read, and always before a save, so a checkpoint never
holds a non-finite state. `after_step(step, metrics)` (host metrics of that step, when read) may
return more metrics (e.g. an evaluation); a step that gets any is logged whatever the cadence.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from typing import Any, Protocol

from jaxalign import distributed
from jaxalign.train.config import RunConfig

log = logging.getLogger(__name__)


class BatchSource(Protocol):
    """Where a trainer's batches come from, in an order a checkpoint can resume."""

    def next_batch(self, step: int) -> tuple[Any, dict[str, Any]] | None: ...

    def position(self) -> dict[str, Any]: ...

    def restore(self, position: dict[str, Any], step: int) -> None: ...


@dataclasses.dataclass
class LoopResult:
    """What the loop leaves: the final state, the last step, the metrics it logged, timing."""

    state: Any
    step: int
    metrics: dict[str, Any]
    """The last metrics read (host values)."""
    history: list[dict[str, Any]]
    """Every logged step's metrics, in order (this invocation only)."""
    seconds: float
    hf_dir: str | None = None


def run_loop(run: RunConfig, *, name: str, total: int, state: Any, step_fn: Callable, source: BatchSource,
             resume: bool, extra: dict[str, Any] | None = None, after_step: Callable | None = None,
             read_every_step: bool = False, show: tuple[str, ...] = (),
             export: Callable[[Any], Any] | None = None, tokenizer: Any = None) -> LoopResult:
    """Runs steps `start + 1 .. total` (start: the restored checkpoint's step, or 0); see the module docstring.

    `extra`: JSON data saved with every checkpoint beside the source's position (e.g. a data digest).
    `show`: host metrics shown on the progress bar. `export(state) -> model`: with `run.export_hf`,
    the final model is written to run_dir/hf (by the main process; every process calls `export`).
    """
    from jaxalign.checkpoint import CheckpointManager
    from jaxalign.runlog import MetricsLogger, Progress, check_finite, format_metrics
    from jaxalign.runlog.metrics import fetch

    ckpt = CheckpointManager(os.path.join(run.run_dir, "checkpoints"), keep=run.keep_checkpoints,
                             save_every=run.save_every, start_over=not resume)
    start = 0
    if resume and ckpt.latest_step() is not None:
        start, state, saved = ckpt.restore(state)
        source.restore(saved, start)
    logger = MetricsLogger(run.run_dir)
    logger.truncate_after(start)
    progress = Progress(total, name, initial=start)
    history: list[dict[str, Any]] = []
    host: dict[str, Any] = {}
    step = start
    t0 = time.perf_counter()
    try:
        while step < total:
            got = source.next_batch(step + 1)
            if got is None:
                break
            batch, batch_host = got
            state, metrics = step_fn(state, batch)
            step += 1
            due_log = step % run.log_every == 0 or step == total
            due_save = ckpt.should_save(step) or step == total
            if due_log or due_save or read_every_step or after_step is not None:
                host = {k: _scalar(v) for k, v in fetch(metrics).items()}
                host.update((k, v) for k, v in batch_host.items() if k != "tokens")
                check_finite(host, step)  # never checkpoint (or train on from) a non-finite state
                more = after_step(step, host) if after_step is not None else None
                if more:
                    host.update(more)
                if due_log or due_save or more or read_every_step:  # read anyway: write them
                    logger.log(step, host, prefix="train")
                    history.append(host)
                    if due_log:
                        log.info(format_metrics(step, host))
            progress.update(1, tokens=batch_host.get("tokens"),
                            **{k: f"{host[k]:.3f}" for k in show if k in host})
            if due_save:
                ckpt.save(step, state, {**(extra or {}), **source.position()})
    finally:
        ckpt.wait()
        progress.close()
        logger.close()
    result = LoopResult(state=state, step=step, metrics=host, history=history, seconds=time.perf_counter() - t0)
    if export is not None and run.export_hf:
        from jaxalign import models

        model = export(state)  # a gather every process takes part in
        if distributed.is_main():
            result.hf_dir = models.save_hf(model, os.path.join(run.run_dir, "hf"), tokenizer=tokenizer)
    return result


def _scalar(value: Any) -> Any:
    """A 0-d metric as a Python number (JSON-ready); arrays stay arrays."""
    return value.item() if getattr(value, "ndim", None) == 0 else value
