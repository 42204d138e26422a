"""Progress bar (tokens/s, postfix, disabling) and the one-line metric summary."""

import io
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxalign.runlog import Progress, console, format_metrics


def test_format_metrics_four_significant_digits():
    line = format_metrics(
        12, {"loss": 2.34567, "tokens": 4096, "lr": 3e-4, "gn": float("nan"), "acc": jnp.float32(0.123456),
             "n": np.int64(7)}
    )
    assert line == "step 12 | loss 2.346 | tokens 4096 | lr 0.0003 | gn nan | acc 0.1235 | n 7"


def test_progress_shows_throughput_and_postfix(monkeypatch):
    monkeypatch.delenv("JAXALIGN_NO_PROGRESS", raising=False)
    out = io.StringIO()
    clock = iter([100.0, 130.0, 130.5, 131.0, 131.5])  # a fake clock: 30 s to compile, then 0.5 s per step
    monkeypatch.setattr(console, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
    with Progress(total=5, desc="sft", file=out) as bar:
        for _ in range(4):
            bar.update(tokens=1000, loss=jnp.float32(1.23456))
        bar.write("step 4 | loss 1.235")
    assert bar.tokens == 4000
    # The first interval (compilation) is skipped: 3000 tokens in the 1.5 s after it.
    assert bar.tokens_per_sec == pytest.approx(2000.0)
    text = out.getvalue()
    assert "sft" in text and "4/5" in text and "loss=1.235" in text and "tok/s=" in text
    assert "step 4 | loss 1.235\n" in text


def test_progress_disabled_by_env_and_on_other_processes(monkeypatch):
    monkeypatch.setenv("JAXALIGN_NO_PROGRESS", "1")
    out = io.StringIO()
    with Progress(total=3, desc="quiet", file=out) as bar:
        bar.update(tokens=10, loss=1.0)
        bar.write("a metric line")
    assert out.getvalue() == "a metric line\n"  # no bar, but explicit lines still print
    assert not bar.enabled

    monkeypatch.delenv("JAXALIGN_NO_PROGRESS")
    monkeypatch.setattr(jax, "process_index", lambda: 3)
    out = io.StringIO()
    with Progress(total=3, desc="worker", file=out) as bar:
        bar.update(tokens=10)
        bar.write("never")
    assert out.getvalue() == ""
