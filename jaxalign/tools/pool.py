"""Parent-side worker handles and the pool that keeps warm workers ready.

Every worker is started from one long-lived launcher thread: PR_SET_PDEATHSIG (which bwrap's
--die-with-parent and our own workers rely on to die with the trainer) fires when the *thread* that
forked the worker exits, so workers started from short-lived threads (a thread pool in
``run_many``, the rollout's threads) would be killed at random.
"""

from __future__ import annotations

import concurrent.futures
import os
import queue
import select
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from jaxalign.tools import protocol
from jaxalign.tools.results import SandboxStats


def _descendants(root: int) -> list[int]:
    """All live descendants of ``root``, from the ppid fields in /proc."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            children.setdefault(int(stat[stat.rindex(b")") + 2 :].split()[1]), []).append(int(name))
    found, stack = [], [root]
    while stack:
        for pid in children.get(stack.pop(), ()):
            found.append(pid)
            stack.append(pid)
    return found


class WorkerError(RuntimeError):
    """The worker process failed (died, hung or spoke garbage): an infrastructure fault.

    ``retryable`` is False when the worker hung: retrying would double an already long wait.
    """

    def __init__(self, message: str, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class Launcher:
    """Runs every ``subprocess.Popen`` on one daemon thread that lives as long as the sandbox."""

    def __init__(self) -> None:
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="jaxalign-sandbox-launcher", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while (item := self._requests.get()) is not None:
            argv, kwargs, future = item
            try:
                future.set_result(subprocess.Popen(argv, **kwargs))
            except BaseException as e:  # handed to the caller's thread
                future.set_exception(e)

    def popen(self, argv: list[str], **kwargs: Any) -> subprocess.Popen:
        """Start a process from the launcher thread and return it."""
        if self._stopped:
            raise OSError("the sandbox launcher is stopped")
        future: concurrent.futures.Future[subprocess.Popen] = concurrent.futures.Future()
        self._requests.put((argv, kwargs, future))
        return future.result()

    def stop(self) -> None:
        self._stopped = True
        self._requests.put(None)


class Worker:
    """One sandboxed worker server process, spoken to over its stdin/stdout pipes."""

    def __init__(self, proc: subprocess.Popen, log: Any, uid: int | None, cleanup: Callable[[], None]) -> None:
        self.proc, self._log, self.uid, self._cleanup = proc, log, uid, cleanup
        self._in, self._out = proc.stdin.fileno(), proc.stdout.fileno()
        self._killed = False
        self._kill_lock = threading.Lock()
        os.set_blocking(self._in, False)  # writes honour the deadline too

    @classmethod
    def start(cls, launcher: Launcher, argv: list[str], env: dict[str, str], uid: int | None,
              cleanup: Callable[[], None], timeout_s: float) -> Worker:
        """Launch a worker and wait for its ready message; WorkerError if it does not come."""
        log = tempfile.TemporaryFile()  # the server's own stderr: kept for error messages
        try:
            proc = launcher.popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env, cwd="/",
                                  start_new_session=True)
        except (OSError, ValueError, subprocess.SubprocessError) as e:
            log.close()
            cleanup()
            raise WorkerError(f"worker failed to start: {e}") from None
        worker = cls(proc, log, uid, cleanup)
        try:
            msg = protocol.read_message(worker._out, time.monotonic() + timeout_s, limit=1 << 16)
        except (TimeoutError, protocol.ProtocolError) as e:
            msg = None
            reason = str(e)
        else:
            reason = "it exited" if msg is None else f"unexpected message {msg!r}"
        if not (isinstance(msg, dict) and msg.get("ready")):
            detail = worker.log_tail()
            worker.kill()
            raise WorkerError(f"worker failed to start ({reason}){': ' + detail if detail else ''}")
        return worker

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 400) -> str:
        try:
            self._log.seek(0, os.SEEK_END)
            self._log.seek(max(0, self._log.tell() - n))
            return self._log.read().decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            return ""

    def request(self, msg: dict[str, Any], timeout_s: float, limit: int) -> dict[str, Any]:
        """Send one request and wait for its response; WorkerError on any failure."""
        deadline = time.monotonic() + timeout_s
        data = memoryview(protocol.encode(msg))
        try:
            while data:
                if not select.select([], [self._in], [], max(0.0, deadline - time.monotonic()))[1]:
                    raise TimeoutError("worker does not read its requests")
                data = data[os.write(self._in, data) :]
            resp = protocol.read_message(self._out, deadline, limit)
        except TimeoutError as e:
            raise WorkerError(f"worker unresponsive: {e}", retryable=False) from None
        except (OSError, protocol.ProtocolError) as e:
            raise WorkerError(f"worker connection failed: {e}") from None
        if resp is None:
            self.proc.poll()
            tail = self.log_tail()
            raise WorkerError(f"worker exited (status {self.proc.returncode}){': ' + tail if tail else ''}")
        return resp

    def _wait_eof(self, timeout_s: float) -> bool:
        """Wait until every process holding the worker's stdout (bwrap included) has exited."""
        deadline = time.monotonic() + timeout_s
        try:
            while select.select([self._out], [], [], max(0.0, deadline - time.monotonic()))[0]:
                if not os.read(self._out, 1 << 16):
                    return True
        except (OSError, ValueError):
            return True
        return False

    def kill(self) -> None:
        """Stop the worker and everything in it, and wait until it is gone; idempotent.

        First an orderly exit: the server kills and reaps its user processes, and each process is
        reaped by its own parent. Killing bwrap first would orphan the processes inside it, and an
        orphan re-parented to a container's pid 1 that never reaps stays a zombie forever.
        """
        with self._kill_lock:  # the pool, a session finalizer and close() may race here
            if self._killed:
                return
            self._killed = True
        if self.proc.poll() is None:
            try:
                os.write(self._in, protocol.encode({"op": "exit"}))  # fits in the pipe buffer
            except OSError:
                pass
            if not self._wait_eof(1.0):  # hung or busy: kill the tree, children before parents
                for pid in [*reversed(_descendants(self.proc.pid)), self.proc.pid]:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for f in (self.proc.stdin, self.proc.stdout, self._log):
            try:
                f.close()
            except OSError:
                pass
        self._cleanup()


class WorkerPool:
    """Idle warm workers, refilled in the background to ``target_idle``.

    ``spawn`` starts one worker (blocking); it is called from the refill thread and, when no idle
    worker is left, from the thread that needs one.
    """

    def __init__(self, spawn: Callable[[], Worker], target_idle: int, stats: SandboxStats,
                 max_idle: int | None = None) -> None:
        self._spawn, self._target, self._stats = spawn, target_idle, stats
        self._max_idle = 2 * target_idle if max_idle is None else max_idle
        self._cond = threading.Condition()
        self._idle: list[Worker] = []
        self._all: set[Worker] = set()
        self._starting = 0
        self._closed = False
        self._thread = threading.Thread(target=self._refill, name="jaxalign-sandbox-refill", daemon=True)
        self._thread.start()

    def _new(self) -> Worker:
        worker = self._spawn()
        with self._cond:
            closed = self._closed
            if not closed:
                self._all.add(worker)
        if closed:
            worker.kill()
            raise WorkerError("sandbox is closed")
        self._stats.bump("workers_started")
        return worker

    def _refill(self) -> None:
        backoff = 0.0
        while True:
            with self._cond:
                while not self._closed and (len(self._idle) + self._starting >= self._target or backoff):
                    if backoff:
                        self._cond.wait(backoff)
                        backoff = 0.0
                    else:
                        self._cond.wait()
                if self._closed:
                    return
                self._starting += 1
            try:
                worker = self._new()
            except WorkerError:
                self._stats.bump("worker_start_failures")
                worker, backoff = None, 1.0
            with self._cond:
                self._starting -= 1
                if worker is not None:
                    self._idle.append(worker)
                self._cond.notify_all()  # a failed start too: it changes what is in flight

    def acquire(self) -> Worker:
        """A live idle worker, or a freshly started one; WorkerError if none can be started."""
        dead = []
        with self._cond:
            while self._idle:
                worker = self._idle.pop(0)  # FIFO: the oldest idle worker has its spare child ready
                if worker.alive:
                    break
                dead.append(worker)
                self._all.discard(worker)
            else:
                worker = None
            self._cond.notify_all()  # wake the refill thread
            closed = self._closed
        for w in dead:  # killed outside the lock: reaping may take a moment
            w.kill()
            self._stats.bump("workers_restarted")
        if worker is not None:
            return worker
        if closed:
            raise WorkerError("sandbox is closed")
        return self._new()

    def release(self, worker: Worker, reset: bool = False, broken: bool = False) -> None:
        """Return a worker after use; ``reset`` forgets session state, ``broken`` replaces it."""
        if reset and not broken:
            try:
                worker.request({"op": "reset"}, 30.0, 1 << 16)
            except WorkerError:
                broken = True
        broken = broken or not worker.alive
        with self._cond:
            keep = not broken and not self._closed and len(self._idle) < self._max_idle
            if keep:
                self._idle.append(worker)
            else:
                self._all.discard(worker)
            self._cond.notify_all()
        if not keep:
            worker.kill()
            if broken:
                self._stats.bump("workers_restarted")

    def close(self) -> None:
        """Kill every worker, idle or in use."""
        with self._cond:
            self._closed = True
            workers, self._all, self._idle = list(self._all), set(), []
            self._cond.notify_all()
        for worker in workers:
            worker.kill()
