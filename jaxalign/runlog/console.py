"""Console output of long runs: a tqdm progress bar with token throughput, and one-line metric summaries."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any, TextIO

import jax
from tqdm import tqdm

from jaxalign.runlog.metrics import fetch, to_number

NO_PROGRESS_ENV = "JAXALIGN_NO_PROGRESS"


def _fmt(value: int | float) -> str:
    return str(value) if isinstance(value, int) else f"{value:.4g}"


def format_metrics(step: int, metrics: Mapping[str, Any]) -> str:
    """`step 120 | loss 2.346 | grad_norm 0.5123 | tokens 4096`: 4 significant digits, ints in full."""
    host = fetch(metrics)
    parts = [f"step {int(step)}"] + [f"{name} {_fmt(to_number(value, name))}" for name, value in host.items()]
    return " | ".join(parts)


class Progress:
    """A tqdm bar over training steps that also shows tokens/s and the latest metrics.

        with Progress(total=num_steps, desc="sft", initial=start_step) as bar:
            for step in ...:
                bar.update(tokens=batch_tokens, loss=loss)   # loss: an already fetched host scalar

    Disabled (no output at all) on processes other than 0 and when JAXALIGN_NO_PROGRESS=1 (e.g. batch
    jobs whose logs should not fill with carriage returns); `write` still prints on process 0 then.
    """

    def __init__(
        self,
        total: int | None,
        desc: str = "",
        unit: str = "step",
        *,
        initial: int = 0,
        file: TextIO | None = None,
        smoothing: float = 0.3,
    ) -> None:
        """`total` steps (None: unknown), starting at `initial` (a resumed run); `smoothing` weighs the
        newest throughput sample in the moving average, as in tqdm."""
        self._main = jax.process_index() == 0
        self.enabled = self._main and os.environ.get(NO_PROGRESS_ENV, "0") != "1"
        self._file = file
        self._bar = tqdm(
            total=total, desc=desc, unit=unit, initial=initial, file=file, disable=not self.enabled,
            dynamic_ncols=True, smoothing=smoothing,
        )
        self._smoothing = smoothing
        self._last = time.perf_counter()
        self.tokens = 0
        self._samples = 0
        self.tokens_per_sec: float | None = None
        """Moving average of token throughput (None until `update` was given tokens twice)."""

    def update(self, n: int = 1, tokens: int | None = None, **postfix: Any) -> None:
        """Advances by `n` steps that processed `tokens` tokens; `postfix` metrics are shown after the bar."""
        now = time.perf_counter()
        if tokens is not None:
            self.tokens += int(tokens)
            self._samples += 1
            rate = int(tokens) / max(now - self._last, 1e-9)
            # The first interval includes compilation, so the average starts at the second sample.
            if self._samples == 2:
                self.tokens_per_sec = rate
            elif self._samples > 2:
                self.tokens_per_sec = self._smoothing * rate + (1 - self._smoothing) * self.tokens_per_sec
            self._last = now
        if not self.enabled:
            return
        fields = {name: _fmt(to_number(value, name)) for name, value in postfix.items()}
        if self.tokens_per_sec is not None:
            fields["tok/s"] = _fmt(self.tokens_per_sec)
        if fields:
            self._bar.set_postfix(fields, refresh=False)
        self._bar.update(n)

    def write(self, message: str) -> None:
        """Prints a line above the bar (process 0 only), e.g. `format_metrics(...)` every few steps."""
        if self._main:
            tqdm.write(message, file=self._file)

    def close(self) -> None:
        """Closes the bar."""
        self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
