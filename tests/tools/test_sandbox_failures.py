"""Sandbox failures are counted and stop the run; nothing leaks, even when the trainer dies."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jaxalign.tools import PythonSandbox, SandboxUnavailableError
from jaxalign.tools import pool as pool_module
from tests.tools.helpers import HANG_GUARD_S, SHORT_TIMEOUT_S, TIMEOUT_S, pids_of_uids, quiet_pool, wait_gone

REPO = Path(__file__).resolve().parents[2]


def test_broken_launcher_raises_after_min_calls(make_sandbox) -> None:
    sb = make_sandbox(python="/nonexistent/bin/python3", min_calls_before_failing=5, max_sandbox_failure_rate=0.5)
    for _ in range(4):
        r = sb.run("print(1)")
        assert r.sandbox_failure and not r.ok
        assert r.error.startswith("sandbox failure: worker failed to start"), r.error
    with pytest.raises(SandboxUnavailableError, match=r"5 of the last 5 calls failed inside the sandbox"):
        sb.run("print(1)")
    with pytest.raises(SandboxUnavailableError):  # stays tripped
        sb.run("print(1)")
    with pytest.raises(SandboxUnavailableError):
        sb.session().run("print(1)")
    stats = sb.stats()
    assert stats["sandbox_failures"] == 5 and stats["calls"] == 5 and stats["ok"] == 0


def test_user_errors_timeouts_and_memory_errors_never_trip(make_sandbox) -> None:
    sb = make_sandbox(min_calls_before_failing=2, max_sandbox_failure_rate=0.0)
    codes = ["1/0", "raise SystemExit(2)", "bytearray(10**10)", "import os; os._exit(3)"]
    results = [sb.run(code) for code in codes] + [sb.run("while True: pass", timeout_s=SHORT_TIMEOUT_S)]
    assert [(r.ok, r.memory_error, r.crashed, r.timed_out) for r in results] == [
        (False, False, False, False), (False, False, False, False), (False, True, False, False),
        (False, False, True, False), (False, False, False, True)]
    with sb.session() as s:
        assert s.run("while True: pass", timeout_s=SHORT_TIMEOUT_S).timed_out
        assert s.run("print(1)").ok
    assert sb.stats()["sandbox_failures"] == 0


def test_failure_rate_uses_a_window_of_recent_calls(make_sandbox, monkeypatch) -> None:
    sb = make_sandbox(min_calls_before_failing=4, max_sandbox_failure_rate=0.5, failure_window=4)
    for _ in range(10):
        assert sb.run("print(1)").ok
    # From now on no worker can start, and the running ones die (white-box fault injection). The
    # pool refills in the background: a start already in flight would bring up a healthy worker with
    # the old interpreter after the swap, and serve the calls below. Swap only once none is in flight.
    with quiet_pool(sb) as workers:
        monkeypatch.setattr(sb._factory, "python", "/nonexistent/python3")
    for worker in workers:
        worker.kill()
    results = []
    with pytest.raises(SandboxUnavailableError, match="3 of the last 4 calls failed inside the sandbox"):
        for _ in range(4):
            results.append(sb.run("print(1)"))
    assert len(results) == 2 and all(r.sandbox_failure for r in results)  # 3 of the last 4 > 50%
    assert all(r.error.startswith("sandbox failure: worker failed to start") for r in results), results


def test_close_leaves_no_processes_or_files() -> None:
    sb = PythonSandbox(timeout_s=TIMEOUT_S, workers=2)
    sb.run("print(1)")
    s = sb.session()
    s.run("import subprocess, sys\np = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])")
    with quiet_pool(sb) as workers:  # every worker there is, none half-started
        worker_pids = {w.proc.pid for w in workers}
        worker_pids |= {p for w in workers for p in pool_module._descendants(w.proc.pid)}  # bwrap init, server
    uids = {w.uid for w in workers if w.uid is not None}
    assert len(uids) == len(workers) or os.geteuid() != 0
    assert pids_of_uids(uids)  # user processes exist (the session's process at least, spares too)...
    hostroot = sb._factory.hostroot
    sb.close()
    assert not wait_gone(worker_pids)
    assert not wait_gone(pids_of_uids(uids))  # ...and are gone after close()
    assert hostroot is None or not os.path.exists(hostroot)
    with pytest.raises(RuntimeError, match="closed"):
        sb.run("print(1)")


@pytest.mark.parametrize("ending", ["exit", "sigkill"])
def test_workers_die_with_the_interpreter(ending: str) -> None:
    script = textwrap.dedent(f"""
        import os, signal, sys
        from jaxalign.tools import PythonSandbox
        from tests.tools.helpers import quiet_pool
        sb = PythonSandbox(timeout_s={TIMEOUT_S}, workers=2)
        s = sb.session()
        s.run("import time")
        sb.run("print(1)")
        with quiet_pool(sb) as workers:  # the refill thread adds workers concurrently
            print(" ".join(str(w.proc.pid) for w in workers), flush=True)
            print(" ".join(str(w.uid) for w in workers if w.uid is not None), flush=True)
        if {ending!r} == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        # "exit": no close(); the interpreter exits normally
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=HANG_GUARD_S,
                         cwd=REPO)
    pid_line, uid_line = (out.stdout.splitlines() + ["", ""])[:2]
    pids, uids = {int(p) for p in pid_line.split()}, {int(u) for u in uid_line.split()}
    assert pids, out.stderr
    assert not wait_gone(pids)
    assert not wait_gone(pids_of_uids(uids))


def test_released_session_workers_are_reused_up_to_max_idle():
    """A batch of concurrent sessions leaves its workers warm: the next batch starts no new process."""
    with PythonSandbox(timeout_s=TIMEOUT_S, workers=2, max_idle_workers=12) as sb:
        for batch in range(2):
            sessions = [sb.session() for _ in range(10)]
            assert [s.run(f"x = {i}\nprint(x * 2)").stdout for i, s in enumerate(sessions)] == \
                [f"{2 * i}\n" for i in range(10)]
            for s in sessions:
                s.close()
            if batch == 0:
                started = sb.stats()["workers_started"]
        # Second batch: the ten are reused (state reset). New are at most the refill thread's 2 spares
        # (target idle = workers), whether they were still starting after the first batch or not.
        assert sb.stats()["workers_started"] - started <= 2
        s = sb.session()
        assert s.run("print('x' in dir())").stdout == "False\n"  # a reused worker forgot the old session
        s.close()
    with pytest.raises(ValueError, match="max_idle_workers"):
        PythonSandbox(workers=4, max_idle_workers=2)
