"""MetricsLogger: JSON lines, TensorBoard events, resume without duplicate steps, process-0 only."""

import json
import math
import os
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from jaxalign.runlog import MetricsLogger, read_metrics


def read_events(tb_dir) -> list:
    """Every Event in the TFRecord files under `tb_dir` (u64 length, u32 crc, payload, u32 crc)."""
    events = []
    for name in sorted(os.listdir(tb_dir)):
        with open(os.path.join(tb_dir, name), "rb") as f:
            data = f.read()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            events.append(event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length]))
            pos += 12 + length + 4
    return events


def scalars(tb_dir) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {}
    for event in read_events(tb_dir):
        for value in event.summary.value:
            out.setdefault(value.tag, {})[event.step] = value.simple_value
    return out


def _strict(constant):
    raise AssertionError(f"non-standard JSON constant {constant}")


def test_log_writes_json_lines_and_tensorboard_scalars(tmp_path):
    with MetricsLogger(tmp_path) as log:
        log.log(1, {"loss": jnp.float32(2.5), "grad_norm": np.float64(0.25), "tokens": 128, "lr": jnp.bfloat16(0.5)})
        log.log(2, {"loss": jnp.array(float("nan")), "grad_norm": float("inf"), "tokens": np.int32(256)})
        log.log(2, {"accuracy": 0.75}, prefix="eval")
        log.log(3, {"raw": 1.0}, prefix=None)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    parsed = [json.loads(line, parse_constant=_strict) for line in lines]  # strict JSON: no NaN literals
    assert [r["step"] for r in parsed] == [1, 2, 2, 3]
    assert all(isinstance(r["time"], float) and r["time"] > 1.6e9 for r in parsed)
    assert list(parsed[0]) == ["step", "time", "train/loss", "train/grad_norm", "train/tokens", "train/lr"]
    first = {k: v for k, v in parsed[0].items() if k != "time"}
    assert first == {"step": 1, "train/loss": 2.5, "train/grad_norm": 0.25, "train/tokens": 128, "train/lr": 0.5}
    assert parsed[1]["train/loss"] is None and parsed[1]["train/grad_norm"] is None
    assert parsed[1]["train/tokens"] == 256 and isinstance(parsed[1]["train/tokens"], int)
    assert parsed[2]["eval/accuracy"] == 0.75 and parsed[3]["raw"] == 1.0
    assert read_metrics(tmp_path) == parsed

    tb = scalars(tmp_path / "tb")
    assert tb["train/loss"][1] == 2.5 and math.isnan(tb["train/loss"][2])
    assert tb["train/grad_norm"] == {1: 0.25, 2: math.inf}
    assert tb["eval/accuracy"] == {2: 0.75} and tb["train/tokens"] == {1: 128.0, 2: 256.0}


def test_rejects_non_scalar_metrics(tmp_path):
    with MetricsLogger(tmp_path, tensorboard=False) as log:
        with pytest.raises(ValueError, match="'train/logits' must be a scalar, got an array of shape \\(2,\\)"):
            log.log(1, {"logits": jnp.zeros(2)})
        with pytest.raises(ValueError, match="'train/name' is not a number"):
            log.log(1, {"name": "abc"})
    assert not (tmp_path / "tb").exists()


def test_resume_truncates_later_steps_and_never_duplicates(tmp_path):
    with MetricsLogger(tmp_path) as log:
        for step in range(1, 6):
            log.log(step, {"loss": 10.0 - step})
    # Crash in the middle of writing a line: it must neither be read nor corrupt the next record.
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "time": 1.0, "train/lo')
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3, 4, 5]

    with MetricsLogger(tmp_path) as log:  # resumed from the checkpoint at step 3
        log.truncate_after(3)
        assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3]
        for step in range(4, 7):
            log.log(step, {"loss": 100.0 + step})
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert [r["train/loss"] for r in records] == [9.0, 8.0, 7.0, 104.0, 105.0, 106.0]
    # TensorBoard cannot edit old event files: the resumed writer starts with a purge at step 4.
    purges = [e.step for e in read_events(tmp_path / "tb") if e.HasField("session_log")]
    assert purges == [4]


def test_only_process_zero_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    with MetricsLogger(tmp_path / "run") as log:
        log.log(1, {"loss": 1.0})
        log.truncate_after(0)
    assert not (tmp_path / "run").exists()


def test_flush_every_buffers_lines(tmp_path):
    log = MetricsLogger(tmp_path, tensorboard=False, flush_every=3)
    log.log(1, {"loss": 1.0})
    log.log(2, {"loss": 1.0})
    assert read_metrics(tmp_path) == []
    log.log(3, {"loss": 1.0})
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3]
    log.close()
