"""A training run's directory, held for the run's lifetime: one writer, a config history, exact resume.

    check_run_dir(config.run_dir)                 # before reading anything: a usable path?
    ... read and validate data, tokenizer, model ...
    with RunDir(config.run_dir, config, resume=resume, allow_config_change=allow) as run:
        ... checkpoints, metrics ...

`RunDir` is the first thing that writes into the directory. It takes an exclusive lock
(`run_dir/.lock`, an `fcntl.flock` held by this process; the kernel releases it when the process
dies, so a lock file left by a killed run is stale by construction and is taken over, with a log
line naming the dead holder). A second run on the same directory gets a `RunDirError` naming the
holder before it has touched anything. Then, when resuming a run that has checkpoints, it compares
the config with the run's saved `config.yaml`: a change to a field that decides the math or the data
order (learning rate, batch size, data, seed, ...) breaks exact resume and is refused unless the
user allows it (`--allow-config-change`), naming the differing fields. Fields listed in
`SAFE_TO_CHANGE` (cadences, meshes, evaluation, worker counts) may change freely. The config is
written last, as `config.yaml` (atomically) and as a new file under `config_history/`, so the
history of every invocation that started is kept.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import logging
import os
import socket
from typing import Any

import jax
import yaml

from jaxalign import config as cfglib
from jaxalign import distributed
from jaxalign.errors import RunDirError
from jaxalign.runlog.files import write_text_atomic

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
CONFIG_FILE = "config.yaml"
HISTORY_DIR = "config_history"
INFO_FILE = "run_info.json"
"""Facts of the newest invocation that are not config: host, pid, JAX backend, sandbox backend."""

SAFE_TO_CHANGE = frozenset({
    # where and how often things are written, not what is computed (a run directory may be moved)
    "run.run_dir", "run.save_every", "run.keep_checkpoints", "run.log_every", "run.export_hf",
    "save_trajectories_every", "eval_every",
    # placement: checkpoints restore onto any mesh; remat recomputes the same values
    "run.mesh", "run.distributed", "run.remat", "rollout_mesh", "reference_mesh",
    # evaluation and throughput knobs that never feed the training updates
    "eval", "eval_batch_size", "sandbox_workers", "features_dir", "feature_batch_rows",
})
"""Config fields (key paths) whose change keeps a resumed run exact (everything else is compared)."""


def check_run_dir(path: str) -> None:
    """Fails with `RunDirError` unless `path` is (or can become) a writable directory; touches nothing."""
    if not path:
        raise RunDirError("run_dir is empty: set run_dir to a directory")
    probe = os.path.abspath(path)
    while not os.path.exists(probe):  # the nearest existing ancestor must be a writable directory
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        what = "run_dir" if probe == os.path.abspath(path) else f"run_dir {path}: its parent"
        raise RunDirError(f"{what} {probe} is a file, not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise RunDirError(f"run_dir {path}: {probe} is not writable")


def config_changes(saved: Any, current: Any, prefix: str = "") -> list[str]:
    """Dotted paths where two config mappings differ (keys present in only one side included)."""
    if isinstance(saved, dict) and isinstance(current, dict):
        out = []
        for key in sorted(set(saved) | set(current), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in saved or key not in current:
                out.append(path)
            else:
                out += config_changes(saved[key], current[key], path)
        return out
    # YAML round trip turns tuples into lists; compare the serialised forms
    return [] if cfglib.to_dict(saved) == cfglib.to_dict(current) else [prefix or "<root>"]


def moved_keys_applied(saved: dict, cls: type) -> dict:
    """A config saved before some of its keys moved (`cls.MOVED`, e.g. `save_every` -> `run.save_every`),
    rewritten to the current layout so that a run started by an earlier version still resumes."""
    out = {k: v for k, v in saved.items() if k not in getattr(cls, "MOVED", {})}
    for old, new in getattr(cls, "MOVED", {}).items():
        if old in saved:
            *sections, key = new.split(".")
            node = out
            for part in sections:
                node = node.setdefault(part, {})
            node[key] = saved[old]
    return out


def defaults_filled(saved: dict, cls: type) -> dict:
    """`saved` with the fields it lacks at their defaults: a field added after the run was saved
    takes a default that keeps the earlier behaviour, so it is not a change unless set otherwise.
    A config that no longer loads (a removed or renamed key) is returned as saved, so those
    differences are reported."""
    try:
        return cfglib.to_dict(cfglib.from_dict(cls, saved))
    except (ValueError, TypeError):  # ConfigError is a ValueError
        return saved


def exactness_changes(saved: dict, current: dict) -> list[str]:
    """The differing fields of `config_changes` that break an exact resume (not in SAFE_TO_CHANGE)."""
    def safe(path: str) -> bool:
        parts = path.split(".")
        return any(".".join(parts[:n]) in SAFE_TO_CHANGE for n in range(1, len(parts) + 1))

    return [p for p in config_changes(saved, current) if not safe(p)]


class RunDir:
    """Exclusive use of a run directory for one run (a context manager; see the module docstring)."""

    def __init__(self, path: str, config: Any, *, resume: bool, allow_config_change: bool = False,
                 has_checkpoints: bool | None = None, metadata: dict | None = None) -> None:
        """Locks `path`, checks `config` against the saved one on resume, and writes the config.

        `has_checkpoints`: whether a resume would restore something (default: a non-empty
        `path/checkpoints`); without checkpoints nothing is resumed and any config is accepted.
        `metadata` (JSON-serialisable, e.g. the sandbox backend) joins the facts written to
        `run_info.json` and to the history entry's header.
        Raises `RunDirError` (locked, not a directory, unwritable) or `ConfigError` (a refused change);
        in both cases nothing in the directory was modified.
        """
        check_run_dir(path)
        self.path = path
        self._fd: int | None = None
        failure = ""
        if distributed.is_main():  # one process owns the directory; the others learn the outcome
            try:
                self._lock()
                self._check_and_record(config, resume, allow_config_change, has_checkpoints, metadata or {})
            except Exception as e:
                self.close()
                if jax.process_count() == 1:
                    raise
                failure = str(e) or type(e).__name__
        if jax.process_count() > 1:
            # every process must stop together, or the others would wait forever at the first collective
            if any(f[0] for f in distributed.gather_lists([1.0 if failure else 0.0])):
                raise RunDirError(failure or f"{path}: process 0 could not take the run directory (see its log)")

    def _lock(self) -> None:
        os.makedirs(self.path, exist_ok=True)
        lock_path = os.path.join(self.path, LOCK_FILE)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 256, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunDirError(f"run_dir {self.path} is in use by {holder}: wait for that run to end, or use "
                              "another run_dir") from None
        previous = os.pread(fd, 256, 0).decode(errors="replace").strip()
        if previous:
            log.info("run_dir %s: taking over the lock left by %s (that process is gone)", self.path, previous)
        me = f"pid {os.getpid()} on {socket.gethostname()} (since {_now()})"
        os.ftruncate(fd, 0)
        os.pwrite(fd, me.encode(), 0)
        self._fd = fd

    def _check_and_record(self, config: Any, resume: bool, allow: bool, has_checkpoints: bool | None,
                          metadata: dict) -> None:
        saved_path = os.path.join(self.path, CONFIG_FILE)
        if has_checkpoints is None:
            ckpt = os.path.join(self.path, "checkpoints")
            has_checkpoints = os.path.isdir(ckpt) and any(n.isdigit() for n in os.listdir(ckpt))
        current = cfglib.to_dict(config)
        if resume and has_checkpoints and os.path.exists(saved_path):
            with open(saved_path, encoding="utf-8") as f:
                saved = defaults_filled(moved_keys_applied(yaml.safe_load(f) or {}, type(config)), type(config))
            if changed := exactness_changes(saved, current):
                detail = ", ".join(f"{p} ({_at(saved, p)!r} -> {_at(current, p)!r})" for p in changed[:8])
                more = f" and {len(changed) - 8} more" if len(changed) > 8 else ""
                if not allow:
                    raise cfglib.ConfigError(
                        f"{saved_path}: resuming with a changed config breaks exact resume: {detail}{more}; "
                        "pass --allow-config-change to resume anyway, or --no-resume / another run_dir to start over")
                log.warning("resuming %s with a changed config (allowed): %s%s", self.path, detail, more)
        text = yaml.safe_dump(current, sort_keys=False)
        history = os.path.join(self.path, HISTORY_DIR)
        os.makedirs(history, exist_ok=True)
        n = len([x for x in os.listdir(history) if x.endswith(".yaml")])
        info = {"invocation": n + 1, "started": _now(), "host": socket.gethostname(), "pid": os.getpid(),
                "resume": resume, "jax_backend": _jax_backend(), **metadata}
        header = "".join(f"# {k}: {v}\n" for k, v in info.items())
        write_text_atomic(os.path.join(history, f"{n + 1:04d}.yaml"), header + text)
        write_text_atomic(os.path.join(self.path, INFO_FILE), json.dumps(info, indent=1) + "\n")
        write_text_atomic(saved_path, text)

    def close(self) -> None:
        """Releases the lock; the emptied lock file stays (only a killed run leaves its name in it)."""
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _jax_backend() -> str:
    return f"{jax.default_backend()} x{jax.device_count()}"


def _at(tree: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return "<absent>"
        tree = tree[part]
    return tree


def _now() -> str:
    return datetime.datetime.now().isoformat(timespec="seconds")
