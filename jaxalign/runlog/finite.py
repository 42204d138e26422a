"""Stop a run on the first NaN / inf loss or gradient norm, with a message that says where."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from jaxalign.runlog.metrics import fetch


class NonFiniteError(FloatingPointError):
    """A metric (loss, grad norm, ...) became NaN or inf; `step` and `bad` (name -> value) say which."""

    def __init__(self, message: str, *, step: int, bad: dict[str, float]) -> None:
        super().__init__(message)
        self.step = step
        self.bad = bad


def check_finite(metrics: Mapping[str, Any], step: int, keys: Iterable[str] | None = None) -> None:
    """Raises NonFiniteError naming every non-finite metric at `step`; checks `keys` only when given.

    Trainers call this on the fetched metrics and stop on the error without saving, so the last
    checkpoint on disk is the last good state. Array metrics count as non-finite if any element is.
    """
    host = fetch(metrics)
    names = list(host) if keys is None else list(keys)
    if missing := [name for name in names if name not in host]:
        raise KeyError(f"check_finite: metrics {missing} not found at step {step} (have {sorted(host)})")
    bad = {}
    for name in names:
        a = np.asarray(host[name], dtype=np.float64)  # bfloat16 / ints included; host data only
        if not np.all(np.isfinite(a)):
            bad[name] = float(a) if a.size == 1 else float(a[~np.isfinite(a)].flat[0])
    if bad:
        listed = ", ".join(f"{name}={value}" for name, value in bad.items())
        raise NonFiniteError(
            f"non-finite metrics at step {step}: {listed}; stopping (the last saved checkpoint is from "
            f"before this step; lower the learning rate or check the data at this step)",
            step=step,
            bad=bad,
        )
