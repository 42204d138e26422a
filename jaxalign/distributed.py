"""Multi-host runs: `jax.distributed` start-up, per-process data slices, and host-side gathers.

jaxalign is multi-controller like JAX itself: every host runs the same program, owns the devices
attached to it, feeds them its own slice of each batch, and calls every jitted step in lockstep.

    distributed.initialize(config.distributed)   # before any other JAX call; no-op on one host
    lo, hi = distributed.batch_rows(mesh, rules, global_rows)    # the rows this host loads
    array = distributed.global_batch(local_rows_np, mesh, rules, batch_axis=0, global_rows=...)

Configuration comes from the run config or, when that leaves it empty, from the environment
(`JAXALIGN_COORDINATOR`, `JAXALIGN_NUM_PROCESSES`, `JAXALIGN_PROCESS_ID`); on Cloud TPU pod slices
and SLURM / Open MPI clusters JAX detects everything itself (`auto: true`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from jaxalign import sharding

log = logging.getLogger(__name__)

ENV_COORDINATOR = "JAXALIGN_COORDINATOR"
ENV_NUM_PROCESSES = "JAXALIGN_NUM_PROCESSES"
ENV_PROCESS_ID = "JAXALIGN_PROCESS_ID"


@dataclasses.dataclass(frozen=True, kw_only=True)
class DistributedConfig:
    """How this process joins a multi-host job (all empty: one process, or the environment)."""

    coordinator_address: str = ""
    """host:port of process 0's coordinator (env JAXALIGN_COORDINATOR); empty: single process."""
    num_processes: int = 0
    """Processes in the job (env JAXALIGN_NUM_PROCESSES)."""
    process_id: int = -1
    """This process's index (env JAXALIGN_PROCESS_ID)."""
    auto: bool = False
    """Let JAX detect the cluster (Cloud TPU pod slices, SLURM, Open MPI): no address needed."""
    cpu_collectives: str = "gloo"
    """Cross-process collectives for CPU devices (tests, CPU clusters); ignored on TPU / GPU."""
    initialization_timeout_s: int = 300
    """How long to wait for every process to reach the coordinator."""

    def resolved(self) -> DistributedConfig:
        """This config with empty fields filled from the environment."""
        env = os.environ
        return dataclasses.replace(
            self,
            coordinator_address=self.coordinator_address or env.get(ENV_COORDINATOR, ""),
            num_processes=self.num_processes or int(env.get(ENV_NUM_PROCESSES, "0")),
            process_id=self.process_id if self.process_id >= 0 else int(env.get(ENV_PROCESS_ID, "-1")),
        )


_INITIALIZED = False


def initialize(config: DistributedConfig | None = None) -> bool:
    """Joins the multi-host job described by `config` (or the environment); True if one was joined.

    Must run before anything touches a JAX device. A second call is a no-op, so trainers can call it
    unconditionally and a launcher may call it first.
    """
    global _INITIALIZED
    if _INITIALIZED:
        return True
    c = (config or DistributedConfig()).resolved()
    if not c.auto and not c.coordinator_address:
        return False
    if not c.auto and (c.num_processes < 1 or c.process_id < 0):
        raise ValueError(f"distributed: coordinator {c.coordinator_address!r} needs num_processes and process_id "
                         f"(config or ${ENV_NUM_PROCESSES} / ${ENV_PROCESS_ID})")
    if c.cpu_collectives:
        # Only the CPU client reads this; TPU / GPU collectives go over ICI / NCCL regardless.
        jax.config.update("jax_cpu_collectives_implementation", c.cpu_collectives)
    if c.auto:
        jax.distributed.initialize(initialization_timeout=c.initialization_timeout_s)
    else:
        jax.distributed.initialize(coordinator_address=c.coordinator_address, num_processes=c.num_processes,
                                   process_id=c.process_id, initialization_timeout=c.initialization_timeout_s)
    _INITIALIZED = True
    log.info("process %d of %d: %d local / %d global devices", jax.process_index(), jax.process_count(),
             jax.local_device_count(), jax.device_count())
    return True


def is_main() -> bool:
    """True on process 0, the one that logs, writes config files and exports models."""
    return jax.process_index() == 0


def batch_rows(mesh: Mesh, rules, global_rows: int) -> tuple[int, int]:
    """[start, stop) of the batch rows whose data this process's devices hold.

    Batches are split over ("data", "fsdp"); a host feeds only the rows of its own devices. With a
    mesh laid out host by host (as `make_mesh` does) they form one contiguous range.
    """
    sh = sharding.batch_sharding(mesh, rules, 1, 0)
    spans = {idx[0].indices(global_rows)[:2] for idx in sh.addressable_devices_indices_map((global_rows,)).values()}
    lo, hi = min(s for s, _ in spans), max(e for _, e in spans)
    if sum(e - s for s, e in spans) != hi - lo:
        raise ValueError(f"this process's batch rows {sorted(spans)} are not contiguous: lay the mesh out host by host")
    return lo, hi


def global_batch(local: np.ndarray, mesh: Mesh, rules, *, batch_axis: int,
                 global_rows: int | None = None) -> jax.Array:
    """A global batch array from this process's rows (`batch_rows`) along `batch_axis`.

    On one process this is a plain placement; on several, no host ever holds the whole batch.
    `global_rows` defaults to what the mesh implies (rows split evenly over the hosts' devices).
    """
    sh = sharding.batch_sharding(mesh, rules, np.ndim(local), batch_axis)
    shape = None
    if global_rows is not None:
        shape = list(np.shape(local))
        shape[batch_axis] = global_rows
        shape = tuple(shape)
    return jax.make_array_from_process_local_data(sh, np.asarray(local), shape)


def local_rows(x: jax.Array, batch_axis: int = 0) -> np.ndarray:
    """This process's rows of a batch-sharded global array, as NumPy (the inverse of `global_batch`)."""
    if x.is_fully_addressable:
        return np.asarray(jax.device_get(x))
    pieces = {}
    for shard in x.addressable_shards:
        start = shard.index[batch_axis].indices(x.shape[batch_axis])[0]
        pieces.setdefault(start, np.asarray(shard.data))
    return np.concatenate([pieces[k] for k in sorted(pieces)], axis=batch_axis)


def to_host(tree: Any) -> Any:
    """The full value of every array of `tree` on this host (an all-gather across processes if needed)."""
    leaves = [x for x in jax.tree.leaves(tree) if isinstance(x, jax.Array)]
    if all(x.is_fully_addressable for x in leaves):
        return jax.device_get(tree)
    return multihost_utils.process_allgather(tree, tiled=True)


def sum_over_processes(values: dict[str, float]) -> dict[str, float]:
    """Sums host-side scalars over all processes (identity on one process); every process must call it."""
    if jax.process_count() == 1:
        return dict(values)
    keys = sorted(values)
    gathered = multihost_utils.process_allgather(np.asarray([values[k] for k in keys], np.float32))
    return dict(zip(keys, np.asarray(gathered).reshape(jax.process_count(), -1).sum(0).tolist()))


def gather_lists(values: list[float]) -> list[list[float]]:
    """Every process's list of numbers (lengths may differ), in process order; every process must call it."""
    if jax.process_count() == 1:
        return [list(values)]
    sizes = np.asarray(multihost_utils.process_allgather(np.asarray([len(values)], np.int32))).reshape(-1)
    padded = np.zeros(max(int(sizes.max()), 1), np.float32)
    padded[:len(values)] = values
    got = np.asarray(multihost_utils.process_allgather(padded)).reshape(len(sizes), -1)
    return [got[i, :n].tolist() for i, n in enumerate(sizes)]
