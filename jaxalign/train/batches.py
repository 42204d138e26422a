"""The order of a run's steps over its rows, and the loop's batch source built on it.

`BatchOrder` is a deterministic, resumable order: epochs of shuffled rows grouped [accum, batch].
`OrderedBatches` turns it into what `jaxalign.train.loop` consumes (a batch per step and a
position to checkpoint), for any trainer whose data is a fixed table of rows (SFT, reward models).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from jaxalign.data.checks import DataError

log = logging.getLogger(__name__)


@dataclasses.dataclass
class BatchOrder:
    """Deterministic epochs of shuffled rows, grouped [accum, batch, T]; resumable by position.

    The permutation of epoch e depends only on (seed, e), so a run restored at (epoch, index)
    sees exactly the batches an uninterrupted run would have seen.
    """

    num_rows: int
    batch_size: int
    accum: int = 1
    seed: int = 0

    @property
    def rows_per_step(self) -> int:
        return self.batch_size * self.accum

    @property
    def steps_per_epoch(self) -> int:
        steps = self.num_rows // self.rows_per_step
        if steps == 0:
            raise DataError(f"{self.num_rows} rows cannot fill one step of {self.rows_per_step} rows "
                             "(batch_size x grad_accum); lower them or add data")
        return steps

    def permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_rows)

    def indices(self, epoch: int, index: int) -> np.ndarray:
        """Row indices [accum, batch] of step `index` of `epoch`."""
        perm = self.permutation(epoch)
        chunk = perm[index * self.rows_per_step:(index + 1) * self.rows_per_step]
        return chunk.reshape(self.accum, self.batch_size)

    def iterate(self, epoch: int = 0, index: int = 0, epochs: int = 1) -> Iterator[tuple[int, int, np.ndarray]]:
        """Yields (epoch, index, row indices) from a position to the end of `epochs`."""
        while epoch < epochs:
            while index < self.steps_per_epoch:
                yield epoch, index, self.indices(epoch, index)
                index += 1
            epoch, index = epoch + 1, 0


class OrderedBatches:
    """A loop batch source over a table of rows in `BatchOrder`.

    `make(indices [accum, batch]) -> batch` builds a step's arrays. `layout` states what a saved
    position means (row count, steps per epoch, a data digest, ...): restoring a position saved
    under another layout raises unless `allow_change`, in which case the epoch restarts from its
    first batch. `what` names the data in that message (a file or config field).
    """

    def __init__(self, order: BatchOrder, epochs: int, make: Callable[[np.ndarray], dict], *, layout: dict,
                 what: str, allow_change: bool = False, tokens: Callable[[dict], int | None] | None = None):
        self.order, self.epochs, self.make = order, epochs, make
        self.layout, self.what, self.allow_change = layout, what, allow_change
        self.tokens = tokens
        self.epoch = self.index = 0

    def next_batch(self, step: int) -> tuple[dict, dict[str, Any]] | None:
        """The batch of the current position and host metrics (epoch, tokens); None past the last epoch."""
        del step  # the position, not the step number, says which rows come next
        if self.epoch >= self.epochs:
            return None
        batch = self.make(self.order.indices(self.epoch, self.index))
        host: dict[str, Any] = {"epoch": self.epoch + (self.index + 1) / self.order.steps_per_epoch}
        if self.tokens is not None and (n := self.tokens(batch)) is not None:
            host["tokens"] = n
        self.index += 1
        if self.index == self.order.steps_per_epoch:
            self.epoch, self.index = self.epoch + 1, 0
        return batch, host

    def position(self) -> dict[str, Any]:
        """The next step's position, with the layout it refers to (saved in every checkpoint)."""
        return {"epoch": self.epoch, "index": self.index, "layout": self.layout}

    def restore(self, saved: dict[str, Any], step: int) -> None:
        """Continues from a checkpoint's position (see the class docstring for layout changes)."""
        self.epoch, self.index = saved["epoch"], saved["index"]
        if saved.get("layout", self.layout) != self.layout:
            change = f"the training rows changed since step {step} ({saved['layout']} -> {self.layout})"
            if not self.allow_change:
                raise DataError(f"{self.what}: {change}, so resuming would not be exact; pass "
                                "--allow-config-change to resume anyway, or --no-resume to start over")
            log.warning("%s: epoch %d restarts from its first batch", change, self.epoch)
            self.index = 0
        log.info("resumed from step %d (epoch %d, batch %d)", step, self.epoch, self.index)
