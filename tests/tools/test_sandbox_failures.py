"""Sandbox failures are counted and stop the run; backends are chosen and reported; nothing leaks."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import time

import pytest

from jaxalign.tools import PythonSandbox, SandboxUnavailableError, backends
from jaxalign.tools import pool as pool_module
from jaxalign.tools import sandbox as sandbox_module


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
    codes = ["1/0", "raise SystemExit(2)", "while True: pass", "bytearray(10**10)", "import os; os._exit(3)"]
    for code in codes:
        assert not sb.run(code, timeout_s=0.3).ok
    with sb.session() as s:
        assert s.run("while True: pass", timeout_s=0.3).timed_out
        assert s.run("print(1)").ok
    assert sb.stats()["sandbox_failures"] == 0


def test_failure_rate_uses_a_window_of_recent_calls(make_sandbox, monkeypatch) -> None:
    sb = make_sandbox(min_calls_before_failing=4, max_sandbox_failure_rate=0.5, failure_window=4)
    for _ in range(10):
        assert sb.run("print(1)").ok
    # From now on no worker can start, and the running ones die (white-box fault injection).
    monkeypatch.setattr(sb._factory, "python", "/nonexistent/python3")
    for worker in list(sb._pool._all):
        worker.kill()
    results = []
    with pytest.raises(SandboxUnavailableError):
        for _ in range(4):
            results.append(sb.run("print(1)"))
    assert len(results) == 2 and all(r.sandbox_failure for r in results)  # 3 of the last 4 > 50%


def test_forced_unavailable_backend_raises(monkeypatch) -> None:
    monkeypatch.setattr(backends, "probe", lambda name: f"{name} is not here")
    with pytest.raises(SandboxUnavailableError, match="bubblewrap is not here"):
        PythonSandbox(backend="bubblewrap")
    with pytest.raises(ValueError, match="unknown sandbox backend"):
        PythonSandbox(backend="docker")


@pytest.fixture
def no_bwrap_on_path(monkeypatch):
    """Hide bwrap (as on a machine without bubblewrap), with fresh probe caches."""
    monkeypatch.setenv("PATH", "/nonexistent")
    backends.probe.cache_clear()
    yield
    backends.probe.cache_clear()


def test_auto_without_bubblewrap_falls_back_with_a_warning(no_bwrap_on_path, monkeypatch, caplog) -> None:
    monkeypatch.setattr(sandbox_module, "_announced", set())  # the backend is logged once per process
    kwargs = {} if backends._rlimit_only_problem(sys.executable) is None else {"python": "/usr/bin/python3"}
    with caplog.at_level(logging.INFO, logger="jaxalign.tools"):
        with PythonSandbox(timeout_s=2, workers=1, **kwargs) as sb:
            assert sb.backend == (backends.NAMESPACES if os.geteuid() == 0 else backends.RLIMIT_ONLY)
            assert sb.run("print(6 * 7)").stdout == "42\n"
            assert not sb.run("open('/etc/x', 'w')").ok
        with pytest.raises(SandboxUnavailableError, match="bwrap is not installed"):
            PythonSandbox(backend="bubblewrap")
    assert any("bubblewrap is unavailable (bwrap is not installed" in m for m in caplog.messages)
    assert any(f"backend: {sb.backend}" in m for m in caplog.messages)


def _pids_of_uids(uids: set[int]) -> set[int]:
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


def _running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (an orphaned zombie waits for pid 1 to reap it)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2 :].split()[0] != b"Z"


def _wait_gone(pids: set[int], seconds: float = 10.0) -> set[int]:
    deadline = time.monotonic() + seconds  # polling for process exit, not a timing assertion
    while pids and time.monotonic() < deadline:
        pids = {p for p in pids if _running(p)}
        time.sleep(0.05)
    return pids


def test_close_leaves_no_processes_or_files() -> None:
    sb = PythonSandbox(timeout_s=2, workers=2)
    sb.run("print(1)")
    s = sb.session()
    s.run("import subprocess, sys\np = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])")
    with sb._pool._cond:  # the refill thread adds workers concurrently: take a snapshot under the pool lock
        workers = list(sb._pool._all)
    worker_pids = {w.proc.pid for w in workers}
    worker_pids |= {p for w in workers for p in pool_module._descendants(w.proc.pid)}  # bwrap init, server
    uids = {w.uid for w in workers if w.uid is not None}
    assert len(uids) == len(workers) or os.geteuid() != 0
    assert _pids_of_uids(uids)  # user processes exist (spares, the session and its child)...
    hostroot = sb._factory.hostroot
    sb.close()
    assert not _wait_gone(worker_pids)
    assert not _wait_gone(_pids_of_uids(uids))  # ...and are gone after close()
    assert hostroot is None or not os.path.exists(hostroot)
    with pytest.raises(RuntimeError, match="closed"):
        sb.run("print(1)")


@pytest.mark.parametrize("ending", ["exit", "sigkill"])
def test_workers_die_with_the_interpreter(ending: str) -> None:
    script = textwrap.dedent(f"""
        import os, signal, sys
        from jaxalign.tools import PythonSandbox
        sb = PythonSandbox(timeout_s=2, workers=2)
        s = sb.session()
        s.run("import time")
        sb.run("print(1)")
        print(" ".join(str(w.proc.pid) for w in sb._pool._all), flush=True)
        print(" ".join(str(w.uid) for w in sb._pool._all if w.uid is not None), flush=True)
        if {ending!r} == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        # "exit": no close(); the interpreter exits normally
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    pid_line, uid_line = (out.stdout.splitlines() + ["", ""])[:2]
    pids, uids = {int(p) for p in pid_line.split()}, {int(u) for u in uid_line.split()}
    assert pids, out.stderr
    assert not _wait_gone(pids)
    assert not _wait_gone(_pids_of_uids(uids))


def test_released_session_workers_are_reused_up_to_max_idle():
    """A batch of concurrent sessions leaves its workers warm: the next batch starts no new process."""
    with PythonSandbox(timeout_s=5, workers=2, max_idle_workers=12) as sb:
        for _ in range(2):
            sessions = [sb.session() for _ in range(10)]
            assert [s.run(f"x = {i}\nprint(x * 2)").stdout for i, s in enumerate(sessions)] == \
                [f"{2 * i}\n" for i in range(10)]
            for s in sessions:
                s.close()
            if _ == 0:
                started = sb.stats()["workers_started"]
        # second batch: the ten are reused (state reset); at most the refill thread's 2 spares are new
        assert sb.stats()["workers_started"] - started <= 2
        s = sb.session()
        assert s.run("print('x' in dir())").stdout == "False\n"  # a reused worker forgot the old session
        s.close()
    with pytest.raises(ValueError, match="max_idle_workers"):
        PythonSandbox(workers=4, max_idle_workers=2)
