"""Append-only metrics log: one JSON line per `log` call in `run_dir/metrics.jsonl`, plus TensorBoard scalars."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

METRICS_FILE = "metrics.jsonl"
TB_DIR = "tb"


def fetch(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """`metrics` with device values read to the host in one transfer, in the caller's key order."""
    # jax.device_get on the dict itself would return it with sorted keys (pytree order).
    return dict(zip(metrics, jax.device_get(list(metrics.values()))))


def to_number(value: Any, name: str) -> int | float:
    """A metric value (Python, NumPy or fetched JAX scalar, any dtype) as a Python int or float."""
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    a = np.asarray(value)
    if a.size != 1:
        raise ValueError(f"metric {name!r} must be a scalar, got an array of shape {a.shape}")
    if np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_:
        return int(a.reshape(()))
    try:
        return float(a.reshape(()))
    except (TypeError, ValueError):
        raise ValueError(f"metric {name!r} is not a number: {value!r}") from None


class MetricsLogger:
    """Writes metrics of a long run to `run_dir/metrics.jsonl` and TensorBoard (`run_dir/tb/`).

        with MetricsLogger("runs/x") as log:
            log.truncate_after(restored_step)   # on resume: drop steps the restored checkpoint never saw
            log.log(step, {"loss": loss, "grad_norm": gn})   # -> {"step": .., "time": .., "train/loss": ..}

    Only process 0 writes; elsewhere every method is a no-op. The JSON file is only ever appended to
    (except by `truncate_after`), so a resumed run continues the same file. NaN / inf are written as
    null in JSON (strict JSON has no NaN) and as-is to TensorBoard.
    """

    def __init__(self, run_dir: str | os.PathLike, *, tensorboard: bool = True, flush_every: int = 1) -> None:
        """Opens (creating) `run_dir`; the file is flushed every `flush_every` calls to `log`."""
        if flush_every < 1:
            raise ValueError(f"flush_every must be >= 1, got {flush_every}")
        self.run_dir = os.fspath(run_dir)
        self.path = os.path.join(self.run_dir, METRICS_FILE)
        self.active = jax.process_index() == 0
        self._tensorboard = tensorboard
        self._flush_every = flush_every
        self._unflushed = 0
        self._tb: Any = None  # created on the first scalar, so a purge step set on resume comes first
        self._purge_step: int | None = None
        self._file = None
        if self.active:
            os.makedirs(self.run_dir, exist_ok=True)
            _drop_partial_last_line(self.path)
            self._file = open(self.path, "a", encoding="utf-8")

    def log(self, step: int, metrics: Mapping[str, Any], prefix: str | None = "train") -> None:
        """Appends `{"step", "time", "<prefix>/<name>": value, ...}`; values are scalars (JAX arrays welcome).

        Fetch metrics from the device every few steps, not every step: each call reads them to the host.
        """
        if not self.active:
            return
        host = fetch(metrics)
        now = time.time()
        record: dict[str, Any] = {"step": int(step), "time": now}
        numbers = {}
        for name, value in host.items():
            key = f"{prefix}/{name}" if prefix else str(name)
            numbers[key] = to_number(value, key)
            record[key] = numbers[key] if math.isfinite(numbers[key]) else None
        self._file.write(json.dumps(record, allow_nan=False) + "\n")
        if self._tensorboard:
            writer = self._writer()
            for key, number in numbers.items():
                writer.add_scalar(key, number, global_step=int(step), walltime=now)
        self._unflushed += 1
        if self._unflushed >= self._flush_every:
            self.flush()

    def truncate_after(self, step: int) -> None:
        """Drops records with a step after `step` (call on resume from the checkpoint at `step`).

        The JSON file is rewritten atomically; TensorBoard is told to hide events from `step + 1` on
        (a purge event), since its event files cannot be edited in place.
        """
        if not self.active:
            return
        self._file.close()
        tmp = self.path + ".tmp"
        with open(self.path, encoding="utf-8") as src, open(tmp, "w", encoding="utf-8") as dst:
            for line in src:
                if line.endswith("\n") and json.loads(line)["step"] <= step:
                    dst.write(line)
        os.replace(tmp, self.path)  # atomic: a crash here leaves either the old or the new file
        self._file = open(self.path, "a", encoding="utf-8")
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        self._purge_step = step + 1

    def flush(self) -> None:
        """Writes buffered lines and events to disk."""
        if self._file is not None:
            self._file.flush()
        if self._tb is not None:
            self._tb.flush()
        self._unflushed = 0

    def close(self) -> None:
        """Flushes and closes the files."""
        self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _writer(self) -> Any:
        if self._tb is None:
            from tensorboardX import SummaryWriter  # heavy import (protobuf), only when used

            self._tb = SummaryWriter(os.path.join(self.run_dir, TB_DIR), purge_step=self._purge_step)
        return self._tb


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of `run_dir/metrics.jsonl` in file order (null values stay None).

    A last line without its newline (a run killed mid-write) is ignored; any other unreadable line is
    an error naming the file and line.
    """
    path = os.path.join(os.fspath(run_dir), METRICS_FILE)
    records = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.endswith("\n"):
                break
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{number}: not a JSON record: {e}") from None
    return records


def _drop_partial_last_line(path: str) -> None:
    # A run killed mid-write leaves a line without "\n"; appending to it would corrupt the next record.
    if not os.path.exists(path):
        return
    with open(path, "rb+") as f:
        end = f.seek(0, os.SEEK_END)
        pos = end
        while pos > 0:
            start = max(0, pos - 65536)
            f.seek(start)
            block = f.read(pos - start)
            if pos == end and block.endswith(b"\n"):
                return
            newline = block.rfind(b"\n")
            if newline >= 0:
                f.truncate(start + newline + 1)
                return
            pos = start
        f.truncate(0)
