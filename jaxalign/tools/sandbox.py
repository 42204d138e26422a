"""PythonSandbox: run untrusted, model-written Python in sandboxed worker processes.

Model code never runs in the calling (training) process. Each worker is a long-lived sandboxed
server (see ``backends.py`` for the isolation and ``worker.py`` for the server); a stateless call
runs in a fresh confined child forked from it, and a session keeps one confined child whose
namespace survives between calls. User code runs as a uid unique to its worker (when the trainer is
root), so RLIMIT_NPROC caps each sandbox separately and no sandbox can signal another.

What user code gets: its own working directory (also HOME and TMPDIR), wiped after the call or
session; no network; fork, threads and subprocesses within ``max_procs``. What it does not get:
writes anywhere else, including /tmp and /dev/shm, so ``multiprocessing`` locks and pools (which
need /dev/shm) fail; background processes are killed when the call that started them ends.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import itertools
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

from jaxalign.tools import backends
from jaxalign.tools.pool import Launcher, Worker, WorkerError, WorkerPool
from jaxalign.tools.results import SandboxResult, SandboxStats

logger = logging.getLogger(__name__)
_GRACE_S = 10.0  # the server enforces the timeout; the parent only catches a server that hangs
_UID_BASE, _UID_SPAN = 0x70000000, 4096  # above the systemd container range; per-process slices
_uid_lock = threading.Lock()
_uids_in_use: set[int] = set()
_uid_counter = itertools.count()
_announced: set[str] = set()


def _allocate_uid() -> int:
    """A sandbox uid unique in this process; the pid picks the slice, to keep trainers apart."""
    base = _UID_BASE + (os.getpid() % 1024) * _UID_SPAN
    with _uid_lock:
        for _ in range(_UID_SPAN):
            uid = base + next(_uid_counter) % _UID_SPAN
            if uid not in _uids_in_use:
                _uids_in_use.add(uid)
                return uid
    raise WorkerError("no free sandbox uid")


def _kill_uid(uid: int) -> None:
    """SIGKILL every live process of ``uid`` (rlimit-only: no pid namespace does it for us)."""
    for _ in range(50):
        pids = []
        for name in os.listdir("/proc"):
            try:
                with open(f"/proc/{name}/status") as f:
                    fields = dict(line.split(":", 1) for line in f if line.startswith(("State:", "Uid:")))
            except (OSError, ValueError):
                continue
            if int(fields["Uid"].split()[0]) == uid and not fields["State"].strip().startswith("Z"):
                pids.append(int(name))
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.01)


class _WorkerFactory:
    """Starts workers for one configuration. Kept apart from PythonSandbox so that the pool's threads
    hold no reference to the sandbox, which can then be garbage-collected (and its finalizer run)."""

    def __init__(self, backend: str, python: str, cfg: dict[str, Any], start_timeout_s: float) -> None:
        self.backend, self.python, self.cfg, self.start_timeout_s = backend, python, cfg, start_timeout_s
        self.launcher = Launcher()
        self.env = backends.worker_env(python)
        self.hostroot = None
        if backend != backends.BUBBLEWRAP:  # bwrap workers keep their files on a tmpfs of their own
            self.hostroot = tempfile.mkdtemp(prefix="jaxalign-sandbox-")
            os.chmod(self.hostroot, 0o711)  # the sandbox uid may traverse, not list
        self._counter = itertools.count()

    def __call__(self) -> Worker:
        uid = _allocate_uid() if backends.is_root() else None
        workroot = backends.BWRAP_WORKROOT
        if self.hostroot is not None:
            workroot = os.path.join(self.hostroot, f"w{next(self._counter)}")
            os.mkdir(workroot, 0o711)
        # Only bwrap hides the host's unix sockets (no /run, own abstract namespace); elsewhere a
        # unix socket could reach host daemons, so user code gets no socket() at all.
        cfg = dict(self.cfg, uid=uid, workroot=workroot, unshare=self.backend == backends.NAMESPACES,
                   parent_pid=None if self.backend == backends.BUBBLEWRAP else os.getpid(),
                   unix_sockets=self.backend == backends.BUBBLEWRAP)
        argv = backends.worker_argv(self.backend, self.python, cfg)
        cleanup = lambda: self._cleanup(uid, None if self.hostroot is None else workroot)
        return Worker.start(self.launcher, argv, self.env, uid, cleanup, self.start_timeout_s)

    def _cleanup(self, uid: int | None, workroot: str | None) -> None:
        if uid is not None:
            if self.backend == backends.RLIMIT_ONLY:
                _kill_uid(uid)  # orphans that escaped the dead server's process tree
            with _uid_lock:
                _uids_in_use.discard(uid)
        if workroot is not None:
            shutil.rmtree(workroot, ignore_errors=True)

    def close(self) -> None:
        self.launcher.stop()
        if self.hostroot is not None:
            shutil.rmtree(self.hostroot, ignore_errors=True)


def _shutdown(pool: WorkerPool, factory: _WorkerFactory, executors: list[concurrent.futures.Executor]) -> None:
    for executor in executors:
        executor.shutdown(wait=False, cancel_futures=True)
    pool.close()
    factory.close()


def _release_session_worker(pool: WorkerPool, holder: list[Worker | None]) -> None:
    worker, holder[0] = holder[0], None
    if worker is not None:
        pool.release(worker, reset=True)  # after the pool closed, this just kills the worker


class PythonSandbox:
    """Runs untrusted Python code in isolated, resource-limited worker processes.

    Args:
        timeout_s: wall-clock limit per call (the whole process tree is killed), also the CPU limit.
        memory_mb: address-space limit (RLIMIT_AS) of the user process.
        max_output_chars: stdout and stderr are each cut to this many characters, with a marker.
        backend: "auto" (strongest available), "bubblewrap", "namespaces" or "rlimit-only".
        workers: warm workers kept ready, and the number of stateless calls run at once.
        max_sandbox_failure_rate: above this fraction of infrastructure failures among recent calls,
            calls raise SandboxUnavailableError (user errors, timeouts and memory errors never count).
        min_calls_before_failing: the failure check starts after this many calls.
        disk_mb: largest file (RLIMIT_FSIZE) and, with namespaces, size of the working-dir tmpfs.
        max_procs: processes and threads per worker (RLIMIT_NPROC, enforced when running as root).
        max_open_files: RLIMIT_NOFILE of the user process.
        python: interpreter for the workers (default: this one, so numpy/sympy of the venv import).
        preload: modules imported once by each worker server, so calls start with them loaded.
        failure_window: number of recent calls the failure rate is computed over.
        seccomp: install the seccomp filter (no sockets but AF_UNIX, no ptrace, no namespaces).
        start_timeout_s: how long a worker may take to start before it counts as a failure.
        max_idle_workers: released workers (reset, not restarted) kept warm up to this many; default
            max(2 * workers, 128). A rollout holds one session per live trajectory, so keeping as many
            warm workers as trajectories per batch saves a process start per trajectory.

    Attributes:
        backend: the backend in use ("bubblewrap", "namespaces" or "rlimit-only"), fixed at
            construction; a forced backend is never replaced by a weaker one, "auto" logs a WARNING
            when it falls back. Also ``stats()["backend"]``.
    """

    def __init__(self, timeout_s: float = 5.0, memory_mb: int = 512, max_output_chars: int = 8192,
                 backend: str = "auto", workers: int = 2, max_sandbox_failure_rate: float = 0.5,
                 min_calls_before_failing: int = 20, *, disk_mb: int = 64, max_procs: int = 64,
                 max_open_files: int = 256, python: str | None = None, preload: Sequence[str] = (),
                 failure_window: int = 200, seccomp: bool = True, start_timeout_s: float = 30.0,
                 max_idle_workers: int | None = None) -> None:
        if timeout_s <= 0 or memory_mb < 32 or max_output_chars < 1 or workers < 1 or disk_mb < 1:
            raise ValueError("timeout_s, memory_mb (>= 32), max_output_chars, workers and disk_mb must be positive")
        if not 0.0 <= max_sandbox_failure_rate <= 1.0 or min_calls_before_failing < 1 or failure_window < 1:
            raise ValueError("need 0 <= max_sandbox_failure_rate <= 1, min_calls_before_failing >= 1, "
                             "failure_window >= 1")
        self.timeout_s, self.memory_mb, self.max_output_chars, self.workers = timeout_s, memory_mb, max_output_chars, \
            workers
        python = python or sys.executable
        self.backend, skipped = backends.select_backend(backend, python)
        self._announce(skipped)
        cfg = {"timeout_s": timeout_s, "memory_mb": memory_mb, "disk_mb": disk_mb, "max_procs": max_procs,
               "max_open_files": max_open_files, "max_output_chars": max_output_chars, "seccomp": seccomp,
               "env": backends.worker_env(python), "expose": backends.python_paths(python), "preload": list(preload)}
        self._stats = SandboxStats(max_sandbox_failure_rate, min_calls_before_failing, failure_window)
        self._factory = _WorkerFactory(self.backend, python, cfg, start_timeout_s)
        max_idle = max(2 * workers, 128) if max_idle_workers is None else max_idle_workers
        if max_idle < workers:
            raise ValueError(f"max_idle_workers ({max_idle}) must be >= workers ({workers})")
        self._pool = WorkerPool(self._factory, workers, self._stats, max_idle=max_idle)
        self._slots = threading.BoundedSemaphore(workers)
        self._limit = 24 * max_output_chars + (1 << 20)  # JSON-escaped output of both streams
        self._executors: list[concurrent.futures.Executor] = []
        self._lock = threading.Lock()
        self._closed = False
        self._finalizer = weakref.finalize(self, _shutdown, self._pool, self._factory, self._executors)

    def _announce(self, skipped: dict[str, str]) -> None:
        """Log the backend once per process: a WARNING naming the weaker backend and why the stronger
        ones were skipped, so a fallback (e.g. a probe that failed) is never silent."""
        if self.backend in _announced:
            return
        _announced.add(self.backend)
        why = "; ".join(f"{name} is unavailable ({reason})" for name, reason in skipped.items())
        weaker = (" User code sees the host filesystem and process table (limited by uid, rlimits and seccomp); "
                  "install bubblewrap for real isolation." if self.backend == backends.RLIMIT_ONLY else "")
        if skipped:
            logger.warning("Python sandbox: falling back to the weaker %s backend: %s.%s", self.backend, why, weaker)
        elif weaker:
            logger.warning("Python sandbox backend: %s.%s", self.backend, weaker)
        else:
            logger.info("Python sandbox backend: %s", self.backend)

    # -- calls --------------------------------------------------------------------------------------
    def _ensure_usable(self) -> None:
        if self._closed:
            raise RuntimeError("PythonSandbox is closed")
        self._stats.check()

    def _execute(self, worker: Worker, code: str, timeout_s: float | None,
                 session: bool) -> tuple[SandboxResult, bool, bool]:
        """Run ``code`` on ``worker``: (result, worker must be replaced, a retry may help)."""
        timeout = self.timeout_s if timeout_s is None else float(timeout_s)
        if not timeout > 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
        start = time.monotonic()
        try:
            resp = worker.request({"op": "run", "code": code, "timeout_s": timeout, "session": session},
                                  timeout + _GRACE_S, self._limit)
        except WorkerError as e:
            return SandboxResult.failure(str(e), time.monotonic() - start), True, e.retryable
        if resp.get("restarted"):
            self._stats.bump("workers_restarted")
        result = SandboxResult.from_response(resp, time.monotonic() - start)
        return result, result.sandbox_failure, result.sandbox_failure

    def run(self, code: str, timeout_s: float | None = None) -> SandboxResult:
        """Run ``code`` in a clean interpreter (nothing carries over from other calls)."""
        self._ensure_usable()
        with self._slots:
            start = time.monotonic()
            for attempt in range(2):
                try:
                    worker = self._pool.acquire()
                except WorkerError as e:
                    result = SandboxResult.failure(str(e), time.monotonic() - start)
                    break
                result, broken, retryable = self._execute(worker, code, timeout_s, session=False)
                self._pool.release(worker, broken=broken)
                # A stateless call leaves nothing behind, so one retry on a fresh worker is safe when
                # the worker died under it (e.g. killed while idle, noticed only now).
                if not (retryable and attempt == 0):
                    break
        self._stats.record(result, self.backend)
        return result

    def run_many(self, codes: Iterable[str], timeout_s: float | None = None) -> list[SandboxResult]:
        """Run several independent snippets concurrently over the workers; results in input order."""
        self._ensure_usable()
        with self._lock:
            if not self._executors:
                self._executors.append(concurrent.futures.ThreadPoolExecutor(self.workers, "jaxalign-sandbox-run"))
            executor = self._executors[0]
        futures = [executor.submit(self.run, code, timeout_s) for code in codes]
        return [f.result() for f in futures]

    def session(self) -> SandboxSession:
        """A stateful session: variables persist between its calls, like notebook cells."""
        self._ensure_usable()
        return SandboxSession(self)

    def stats(self) -> dict[str, int | str]:
        """``backend`` (the isolation in use, a string, for run metadata) and the integer counters:
        calls, ok, user_errors, timeouts, memory_errors, crashes, truncated, sandbox_failures,
        workers_started, workers_restarted, worker_start_failures."""
        return {"backend": self.backend, **self._stats.snapshot()}

    def close(self) -> None:
        """Kill every worker and remove the sandbox's files; idempotent (also run at exit)."""
        self._closed = True
        self._finalizer()

    def __enter__(self) -> PythonSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SandboxSession:
    """One trajectory's stateful interpreter; obtain it with ``PythonSandbox.session()``.

    A session holds one worker. If its process is killed (timeout, crash) it restarts on the next
    call, and that call's result has ``state_lost`` set and a note on stderr. Calls on one session
    are serialised; different sessions run in parallel.
    """

    def __init__(self, sandbox: PythonSandbox) -> None:
        self._sandbox = sandbox
        self._holder: list[Worker | None] = [None]  # shared with the finalizer, which must not hold self
        self._lock = threading.Lock()
        self._used = False
        self._closed = False
        # A session dropped without close() must not keep its worker leased for ever.
        self._finalizer = weakref.finalize(self, _release_session_worker, sandbox._pool, self._holder)

    @property
    def _worker(self) -> Worker | None:
        return self._holder[0]

    @_worker.setter
    def _worker(self, worker: Worker | None) -> None:
        self._holder[0] = worker

    def run(self, code: str, timeout_s: float | None = None) -> SandboxResult:
        """Run ``code`` in this session's namespace; a bare final expression is printed."""
        sb = self._sandbox
        with self._lock:
            if self._closed:
                raise RuntimeError("SandboxSession is closed")
            sb._ensure_usable()
            start, note = time.monotonic(), ""
            try:
                if self._worker is None:
                    self._worker = sb._pool.acquire()
                    if self._used:
                        note = ("[sandbox] note: the session was restarted because its worker failed; variables, "
                                "imports and files from earlier calls are lost.\n")
            except WorkerError as e:
                result = SandboxResult.failure(str(e), time.monotonic() - start)
            else:
                result, broken, _ = sb._execute(self._worker, code, timeout_s, session=True)
                if broken:
                    sb._pool.release(self._worker, broken=True)
                    self._worker = None
                if note:
                    result = dataclasses.replace(result, stderr=note + result.stderr, state_lost=True)
                self._used = True
        sb._stats.record(result, sb.backend)
        return result

    def close(self) -> None:
        """Return the worker (its process and files are wiped first); idempotent."""
        with self._lock:
            self._closed = True
        self._finalizer()

    def __enter__(self) -> SandboxSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
