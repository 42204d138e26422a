"""Building trainer configs in tests from flat keyword arguments (run fields go into `run:`)."""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxalign.train.config import RUN_FIELDS


def build(cls: type, **kw: Any) -> Any:
    """`cls(**kw)` with the RunConfig fields among `kw` applied to `cls`'s default `run` section."""
    run = {k: kw.pop(k) for k in list(kw) if k in RUN_FIELDS}
    default = next(f.default for f in dataclasses.fields(cls) if f.name == "run")
    return cls(**kw, run=dataclasses.replace(kw.pop("run", default), **run))


def replace(config: Any, **kw: Any) -> Any:
    """`dataclasses.replace(config, **kw)`, run fields included."""
    run = {k: kw.pop(k) for k in list(kw) if k in RUN_FIELDS}
    return dataclasses.replace(config, **kw, run=dataclasses.replace(config.run, **run))
