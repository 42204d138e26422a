"""`RunConfig`: how a training run runs, the section `run:` that every trainer config carries.

What is trained (model, data, objective, optimizer) stays in each trainer's own config; where the
run writes, how often, on which devices and in which precision is the same for SFT, GRPO and the
reward model, so it is one dataclass with one set of checks. Trainer configs give their own
defaults (`SFTConfig.run = RunConfig(run_dir="runs/sft", ...)`), and a YAML `run:` section
overrides only the fields it names on top of them.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from jaxalign import sharding
from jaxalign.config import positive, require
from jaxalign.distributed import DistributedConfig

RUN_FIELDS = ("run_dir", "seed", "save_every", "keep_checkpoints", "log_every", "mesh", "distributed",
              "compute_dtype", "remat", "export_hf")
# `attention` came after `run:`: it has no flat predecessor, so it is not in RUN_FIELDS.
"""The fields of RunConfig (top-level keys of every trainer config until `run:` existed)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Run directory, cadences, seed, devices and precision of one training run."""

    run_dir: str = "runs/run"
    """Checkpoints, metrics.jsonl, TensorBoard events, config history; a local path or gs://."""
    seed: int = 0
    """Initialisation, data order and sampling seeds derive from it."""
    save_every: int = 100
    """Checkpoint cadence in steps (the last step is always saved)."""
    keep_checkpoints: int = 3
    """Newest checkpoints kept (older ones are deleted after a newer one is complete)."""
    log_every: int = 10
    """Metrics cadence in steps: the host reads the step's metrics (and checks them for NaN) only then."""
    mesh: sharding.MeshConfig = sharding.MeshConfig()
    """Training mesh over all devices of all hosts (rules: sharding.TRAIN_RULES)."""
    distributed: DistributedConfig = DistributedConfig()
    """Multi-host start-up (empty: one process, or the JAXALIGN_* environment variables)."""
    compute_dtype: Literal["float32", "bfloat16"] = "float32"
    """Activation dtype (parameters and optimizer state stay float32)."""
    remat: Literal["none", "full", "dots"] | None = None
    """Rematerialise each block in the backward pass (None: keep the model config's setting)."""
    attention: Literal["auto", "xla", "splash", "pallas_gpu", "cudnn"] | None = None
    """Attention implementation for this run (None: the model config's, "auto" by default)."""
    export_hf: bool = True
    """Write the final model as a Hugging Face directory to run_dir/hf."""

    def __post_init__(self):
        require(self, "run_dir", bool(self.run_dir), "must name a directory")
        positive(self, "save_every", "keep_checkpoints", "log_every")


MOVED_TO_RUN = {name: f"run.{name}" for name in RUN_FIELDS}
"""The `MOVED` table of a trainer config: keys that were top-level before `run:` existed."""
