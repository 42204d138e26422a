"""Training checkpoints: atomic, keep-last-K, sharding-aware save / restore of a pytree plus JSON host data.

    mgr = jaxalign.checkpoint.CheckpointManager("runs/x/ckpt", keep=3, save_every=100)
    step, state, extra = mgr.restore(abstract_state)      # latest complete checkpoint
    mgr.save(step, state, extra={"data_position": 1234})
"""

from jaxalign.checkpoint.manager import CheckpointManager, CheckpointMismatchError, CheckpointNotFoundError
from jaxalign.checkpoint.tree import abstract_target

__all__ = ["CheckpointManager", "CheckpointMismatchError", "CheckpointNotFoundError", "abstract_target"]
