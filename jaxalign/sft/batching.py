"""Packing rendered examples into fixed-length rows (the order of steps over them: `jaxalign.train.batches`)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import numpy as np

from jaxalign.sft.render import RenderedExample

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Rows:
    """A table of fixed-length rows [N, T]: ids, loss_mask, segment_ids (0 = padding), positions."""

    input_ids: np.ndarray
    loss_mask: np.ndarray
    segment_ids: np.ndarray
    positions: np.ndarray

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def take(self, index: np.ndarray) -> dict[str, np.ndarray]:
        out = {k: getattr(self, k)[index] for k in ("input_ids", "loss_mask", "segment_ids", "positions")}
        out["attention_mask"] = (out["segment_ids"] > 0).astype(np.int32)
        return out


def pack(examples: Sequence[RenderedExample], seq_len: int, *, pad_id: int = 0, packing: bool = True) -> Rows:
    """Places examples into rows of `seq_len` tokens.

    With `packing`, first-fit decreasing puts several examples in a row (segment ids keep them
    from attending to each other, positions restart at 0 for each); without it, one per row.
    Examples longer than `seq_len` are dropped with a warning: cutting them would train on a
    trajectory without its final answer.
    """
    keep = [e for e in examples if len(e.ids) <= seq_len]
    if len(keep) < len(examples):
        log.warning("dropped %d of %d examples longer than seq_len=%d", len(examples) - len(keep),
                    len(examples), seq_len)
    if not keep:
        raise ValueError(f"no example fits seq_len={seq_len}")
    order = sorted(range(len(keep)), key=lambda i: (-len(keep[i].ids), i))
    bins: list[list[int]] = []
    room: list[int] = []
    for i in order:
        n = len(keep[i].ids)
        slot = next((b for b in range(len(bins)) if room[b] >= n), None) if packing else None
        if slot is None:
            bins.append([])
            room.append(seq_len)
            slot = len(bins) - 1
        bins[slot].append(i)
        room[slot] -= n
    shape = (len(bins), seq_len)
    rows = Rows(np.full(shape, pad_id, np.int32), np.zeros(shape, np.int32), np.zeros(shape, np.int32),
                np.zeros(shape, np.int32))
    for r, members in enumerate(bins):
        at = 0
        for seg, i in enumerate(members, start=1):
            e = keep[i]
            n = len(e.ids)
            rows.input_ids[r, at:at + n] = e.ids
            rows.loss_mask[r, at:at + n] = e.loss_mask
            rows.segment_ids[r, at:at + n] = seg
            rows.positions[r, at:at + n] = np.arange(n)
            at += n
    return rows


def batch_from(rows: Rows, indices_AB: np.ndarray) -> dict[str, np.ndarray]:
    """The [A, B, T] arrays for a step."""
    a, b = indices_AB.shape
    flat = rows.take(indices_AB.reshape(-1))
    return {k: v.reshape(a, b, -1) for k, v in flat.items()}
