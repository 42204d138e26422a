"""Keep-last-K training checkpoints of a JAX pytree plus JSON host data, on orbax-checkpoint.

Atomicity (orbax-checkpoint 0.12.8, local / POSIX paths): a step is written into
`<dir>/<step>.orbax-checkpoint-tmp`, `commit_success.txt` is written into it last, and the directory is
then renamed to `<dir>/<step>` (`AtomicRenameTemporaryPath.finalize`). A process killed mid-save leaves
only the `.orbax-checkpoint-tmp` directory, which is never listed as a step and is removed when the next
manager opens the directory. Old steps are *renamed* into `<dir>/_deleted/` before they are removed:
orbax's plain delete is an in-place `rmtree`, and a kill during it would leave a half-deleted directory
under a valid step name. A step counts as complete only if its directory has that final name and holds
`commit_success.txt`.

A committed step can still be unreadable (a disk filled or a file truncated after the commit, a
copy cut short). Restoring the latest step then falls back to the newest step that restores, logs
which steps it skipped and why, and moves the unreadable ones into `<dir>/unreadable/` (never
deleted: they may still be recoverable by hand), so the resumed run can save those steps again.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import shutil
from collections.abc import Mapping
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from jaxalign.checkpoint.tree import PyTree, abstract_target, leaves_by_path, tree_diff
from jaxalign.errors import UserError

log = logging.getLogger(__name__)

_STATE, _EXTRA = "state", "extra"
_UNREADABLE = "unreadable"
"""Sub-directory that committed but unreadable steps are moved into (never deleted)."""
_TRASH = "_deleted"
"""Sub-directory that old steps are atomically renamed into before they are deleted."""
_COMMIT_FILE = "commit_success.txt"
"""Written by orbax 0.12.8 inside the temporary directory just before the final rename."""


class CheckpointNotFoundError(UserError, FileNotFoundError):
    """No complete checkpoint at the requested step; the message names the directory and the steps present."""


class CheckpointMismatchError(UserError, ValueError):
    """A checkpoint does not fit `abstract_state` (tree structure, shape); the message names directory and step."""


class CheckpointUnreadableError(UserError, OSError):
    """No committed checkpoint of a directory restores; the message names each step and why it failed."""


class CheckpointManager:
    """Saves and restores training state: a pytree of arrays plus JSON-serialisable host data.

        mgr = CheckpointManager("runs/x/ckpt", keep=3, save_every=100)
        if mgr.latest_step() is not None:
            step, state, extra = mgr.restore(abstract_state)
        ...
        if mgr.should_save(step):
            mgr.save(step, state, extra={"data_position": pos, "config": cfg})
        mgr.close()

    Saves are asynchronous by default: `save` returns once device arrays are copied to host memory (so
    donated buffers may be reused) and the write finishes in the background; `wait()` blocks until it
    is committed. `latest_step`, `all_steps` and `restore` only ever see committed checkpoints. Every
    process of a multi-host job must call `save`, `restore`, `wait` and `close`.
    """

    def __init__(
        self, directory: str | os.PathLike, *, keep: int = 3, save_every: int = 100, async_save: bool = True,
        start_over: bool = False,
    ) -> None:
        """Opens (creating if needed) `directory`; keeps the newest `keep` steps; `should_save` every `save_every`.

        Leftovers of a crashed run (temporary step directories, half-deleted old steps) are removed here.
        `start_over` (a trainer's resume=False) also deletes every earlier step, which would otherwise
        collide with this run's saves.
        """
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        if save_every < 1:
            raise ValueError(f"save_every must be >= 1, got {save_every}")
        self._dir = epath.Path(os.path.abspath(os.fspath(directory)))
        self.keep = keep
        self.save_every = save_every
        self._purge_trash()  # before orbax starts: nothing can be renaming into it yet
        policies = ocp.checkpoint_managers
        options = ocp.CheckpointManagerOptions(
            # Explicit policy: orbax's default adds InitialSavePolicy (save at the first step of an empty
            # directory), which is not "every save_every steps". Preemption saves stay on.
            save_decision_policy=policies.AnySavePolicy(
                [policies.FixedIntervalPolicy(save_every), policies.PreemptionCheckpointingPolicy()]
            ),
            preservation_policy=policies.LatestN(n=keep),
            todelete_subdir=_TRASH,
            cleanup_tmp_directories=True,
            enable_async_checkpointing=async_save,
            create=True,
        )
        self._mgr = ocp.CheckpointManager(
            self._dir,
            options=options,
            item_names=(_STATE, _EXTRA),
            item_handlers={_STATE: ocp.PyTreeCheckpointHandler(), _EXTRA: ocp.JsonCheckpointHandler()},
        )
        if start_over:
            self.clear()

    @property
    def directory(self) -> str:
        """The absolute checkpoint directory."""
        return os.fspath(self._dir)

    def should_save(self, step: int) -> bool:
        """True when `step` is a multiple of `save_every` (or a preemption was signalled) and is newer than
        the latest checkpoint."""
        return self._mgr.should_save(step)

    def save(self, step: int, state: PyTree, extra: Mapping[str, Any] | None = None) -> None:
        """Starts saving `state` (arrays, optax state, typed or raw PRNG keys) and `extra` as step `step`.

        `extra` must be JSON-serialisable (tuples come back as lists, dict keys as strings). The save
        always happens (cadence is `should_save`'s job); the oldest steps beyond `keep` are removed once
        it is committed. Raises FileExistsError if `step` is already saved.
        """
        extra = dict(extra or {})
        try:
            json.dumps(extra, allow_nan=True)
        except TypeError as e:
            raise TypeError(f"checkpoint extra for step {step} is not JSON-serialisable: {e}") from None
        self.wait()  # commit the previous save and clear its deleted steps before the next one starts
        if step in self.all_steps():
            raise FileExistsError(f"{self._dir}: a checkpoint for step {step} already exists")
        self._mgr.save(
            step,
            args=ocp.args.Composite(**{_STATE: ocp.args.PyTreeSave(state), _EXTRA: ocp.args.JsonSave(extra)}),
            force=True,
        )

    def clear(self) -> None:
        """Deletes every committed step (a run started over with resume=False), renamed away first as usual."""
        self.wait()
        for step in self.all_steps():
            self._mgr.delete(step)
        self.wait()

    def all_steps(self) -> list[int]:
        """Steps with a complete, committed checkpoint on disk, ascending (a save in flight is not listed)."""
        # Read from disk, not orbax's in-memory list: that one includes the step being saved right now.
        steps = ocp.utils.checkpoint_steps(self._dir)
        return sorted(s for s in steps if (self._dir / str(s) / _COMMIT_FILE).exists())

    def latest_step(self) -> int | None:
        """The newest complete checkpoint step, or None when there is none."""
        steps = self.all_steps()
        return steps[-1] if steps else None

    def restore(self, abstract_state: PyTree, step: int | None = None) -> tuple[int, PyTree, dict[str, Any]]:
        """Restores `(step, state, extra)`; `step=None` means the newest committed step that restores
        (unreadable newer ones are skipped and set aside, see the module docstring).

        `abstract_state` gives the tree structure, shapes, dtypes and target shardings: leaves are
        `jax.ShapeDtypeStruct` (with `.sharding`; without one the leaf lands on the first local device)
        or concrete arrays whose sharding is reused. Checkpoints restore onto any mesh, e.g. one saved
        from 8 devices onto 1. Values come back bitwise identical (dtype as in `abstract_state`).
        """
        self.wait()
        steps = self.all_steps()
        target = abstract_target(abstract_state)
        if step is not None:
            if step not in steps:
                raise CheckpointNotFoundError(f"{self._dir}: no complete checkpoint for step {step} (steps: {steps})")
            return self._restore_step(step, target)
        if not steps:
            raise CheckpointNotFoundError(f"{self._dir}: no complete checkpoint to restore")
        skipped: list[tuple[int, str]] = []
        for candidate in reversed(steps):
            try:
                restored = self._restore_step(candidate, target)
            except CheckpointMismatchError:
                raise  # the wanted state differs from what was saved: every step would fail alike
            except Exception as e:  # orbax, tensorstore, JSON: a damaged step raises any of these
                reason = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"
                log.warning("%s: checkpoint step %d does not restore (%s); trying the previous step", self._dir,
                            candidate, reason)
                skipped.append((candidate, reason))
                continue
            if skipped:
                self._set_aside([s for s, _ in skipped])
                log.warning("%s: restored step %d; skipped unreadable step(s) %s, moved to %s/", self._dir,
                            candidate, [s for s, _ in skipped], _UNREADABLE)
            return restored
        raise CheckpointUnreadableError(f"{self._dir}: no checkpoint restores: "
                                        + "; ".join(f"step {s}: {r}" for s, r in skipped))

    def _restore_step(self, step: int, target: PyTree) -> tuple[int, PyTree, dict[str, Any]]:
        saved_tree = self._mgr.item_metadata(step)[_STATE].tree
        if diff := tree_diff(leaves_by_path(saved_tree), leaves_by_path(target)):
            raise CheckpointMismatchError(f"{self._dir} step {step}: {diff}")
        args = ocp.args.Composite(
            **{
                _STATE: ocp.args.PyTreeRestore(
                    target, restore_args=ocp.checkpoint_utils.construct_restore_args(target)
                ),
                _EXTRA: ocp.args.JsonRestore(),
            }
        )
        restored = self._mgr.restore(step, args=args)
        return step, restored[_STATE], dict(restored[_EXTRA] or {})

    def _set_aside(self, steps: list[int]) -> None:
        """Moves unreadable steps out of the step namespace (kept on disk) and refreshes orbax's step list."""
        if jax.process_index() == 0:
            aside = os.path.join(os.fspath(self._dir), _UNREADABLE)
            os.makedirs(aside, exist_ok=True)
            stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
            for step in steps:
                os.replace(os.path.join(os.fspath(self._dir), str(step)), os.path.join(aside, f"{step}-{stamp}"))
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("jaxalign-checkpoint-set-aside")
        self._mgr.reload()

    def wait(self) -> None:
        """Blocks until an in-flight save is committed (and old steps are removed)."""
        self._mgr.wait_until_finished()
        self._purge_trash()

    def close(self) -> None:
        """Waits for outstanding saves and releases orbax's threads."""
        self._mgr.close()
        self._purge_trash()

    def __enter__(self) -> CheckpointManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _purge_trash(self) -> None:
        # Only one process deletes; orbax renames into the trash only from the primary host as well.
        trash = os.path.join(os.fspath(self._dir), _TRASH)
        if jax.process_index() == 0 and os.path.isdir(trash):
            shutil.rmtree(trash, ignore_errors=True)
