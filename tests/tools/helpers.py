"""Helpers that keep the sandbox tests deterministic on a loaded machine.

Nothing here sleeps to synchronise: processes are awaited on pidfds, the pool is inspected under its
own lock once no worker start is in flight, and calls that must share one worker server are pinned
to it (the pool hands out whichever idle worker is oldest, and refills in the background).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from collections.abc import Callable, Iterator

from jaxalign.tools import PythonSandbox, SandboxResult
from jaxalign.tools.pool import Worker, _descendants

# Benign code gets a generous limit, so that other work on the same cores never turns it into a
# timeout; code that must time out (an endless loop, a long sleep) passes SHORT_TIMEOUT_S instead.
TIMEOUT_S = 10.0
SHORT_TIMEOUT_S = 0.5
HANG_GUARD_S = 120.0  # only bounds a wait that never ends; every wait returns on its event first


def running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (an orphaned zombie waits for pid 1 to reap it)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2 :].split()[0] != b"Z"


def pids_of_uids(uids: set[int]) -> set[int]:
    """Live (non-zombie) processes running as one of ``uids``."""
    pids = set()
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/status") as f:
                status = dict(line.split(":", 1) for line in f if line.startswith(("Uid:", "State:")))
        except (OSError, ValueError):
            continue
        if int(status["Uid"].split()[0]) in uids and not status["State"].strip().startswith("Z"):
            pids.add(int(name))
    return pids


def wait_gone(pids: set[int], timeout_s: float = HANG_GUARD_S) -> set[int]:
    """Wait until every process in ``pids`` has exited; returns those still running.

    A pidfd becomes readable when its process exits (reaped or not), so this returns the moment the
    last one is gone, however slow the machine; ``timeout_s`` only bounds a process that never exits.
    """
    fds: dict[int, int] = {}
    for pid in pids:
        try:
            fds[os.pidfd_open(pid)] = pid
        except ProcessLookupError:
            pass
    try:
        deadline = time.monotonic() + timeout_s
        while fds and (remaining := deadline - time.monotonic()) > 0:
            for fd in select.select(list(fds), [], [], remaining)[0]:
                os.close(fd)
                del fds[fd]
        return {pid for pid in fds.values() if running(pid)}
    finally:
        for fd in fds:
            os.close(fd)


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and all its descendants (the worker server itself, not only bwrap)."""
    for p in [pid, *_descendants(pid)]:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


@contextlib.contextmanager
def quiet_pool(sb: PythonSandbox) -> Iterator[list[Worker]]:
    """Hold the pool's lock once no background worker start is in flight; yields every worker.

    A start that began earlier would come up with the old settings after the caller changed them
    (or be missed by a kill of the workers listed now): while this holds the lock, none is running,
    and any later start reads what the caller set. No call may run on ``sb`` meanwhile (a call with
    no idle worker starts one in its own thread).
    """
    pool = sb._pool
    with pool._cond:
        assert pool._cond.wait_for(lambda: pool._starting == 0, HANG_GUARD_S), "a worker start never finished"
        yield list(pool._all)


@contextlib.contextmanager
def pinned(sb: PythonSandbox) -> Iterator[Callable[..., SandboxResult]]:
    """A ``run(code, timeout_s=None)`` whose stateless calls all go through one worker server."""
    worker = sb._pool.acquire()
    broken = False

    def run(code: str, timeout_s: float | None = None) -> SandboxResult:
        nonlocal broken
        result, failed, _ = sb._execute(worker, code, timeout_s, session=False)
        broken |= failed
        return result

    try:
        yield run
    finally:
        sb._pool.release(worker, broken=broken)
