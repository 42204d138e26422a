"""Where each model of a GRPO run lives: the training mesh, the rollout mesh, the reference mesh.

* Policy training: all devices of all hosts, `TRAIN_RULES` (FSDP + tensor parallel).
* Rollout: this host's own devices, `ROLLOUT_RULES` (replicated over fsdp, tensor parallel only).
  Each host samples its own prompts with its own sandbox pool, so the host-driven tool loop never
  has to run in lockstep with other hosts; after every update the new weights are resharded from
  the training layout into this layout (`sharding.reshard`).
* Reference policy (KL penalty): the training mesh by default, or its own mesh.

Rule-based rewards run on the host; a model-based reward scorer takes its own mesh argument.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from jaxalign import distributed, sharding


def rollout_mesh(config: sharding.MeshConfig | None, train_mesh: Mesh) -> Mesh:
    """The sampler's mesh over this host's devices of the training mesh (in mesh order).

    Default (None): all of them, as (1, n / t, t) with the training mesh's tensor size t when it
    divides n (else 1): same devices, no FSDP all-gathers in the decode loop.
    """
    local = [d for d in train_mesh.devices.flat if d.process_index == jax.process_index()]
    if config is None:
        t = train_mesh.shape["tensor"] if len(local) % train_mesh.shape["tensor"] == 0 else 1
        config = sharding.MeshConfig(data=1, fsdp=len(local) // t, tensor=t)
    return sharding.make_mesh(config, local)


class Placement:
    """The meshes of one GRPO run and the moves between them."""

    def __init__(self, train: sharding.MeshConfig, rollout: sharding.MeshConfig | None = None,
                 reference: sharding.MeshConfig | None = None):
        self.train_mesh = sharding.make_mesh(train)
        self.rollout_mesh = rollout_mesh(rollout, self.train_mesh)
        self.reference_mesh = self.train_mesh if reference is None else sharding.make_mesh(reference)

    def describe(self) -> str:
        shape = lambda m: "x".join(str(m.shape[a]) for a in sharding.MESH_AXES)  # noqa: E731
        return (f"train {shape(self.train_mesh)} ({self.train_mesh.devices.size} devices), rollout "
                f"{shape(self.rollout_mesh)} per host, reference {shape(self.reference_mesh)}")

    def to_rollout(self, params: Any) -> Any:
        """Parameters (any layout) resharded into the rollout layout on this host's rollout mesh."""
        return sharding.reshard(params, sharding.tree_shardings(params, self.rollout_mesh, sharding.ROLLOUT_RULES))

    def to_reference(self, params: Any) -> Any:
        """A copy of the parameters for the frozen reference model (FSDP layout: forward passes only)."""
        return sharding.reshard(params, sharding.tree_shardings(params, self.reference_mesh, sharding.TRAIN_RULES))

    def logprobs(self, fn: Callable, params: Any, local_inputs: dict[str, np.ndarray], mesh: Mesh) -> np.ndarray:
        """`fn(params, batch)[0]` on `mesh` for this host's rows [b, T]; returns this host's rows."""
        batch = {k: distributed.global_batch(v, mesh, sharding.TRAIN_RULES, batch_axis=0)
                 for k, v in local_inputs.items()}
        return distributed.local_rows(fn(params, batch)[0])
