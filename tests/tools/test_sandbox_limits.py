"""Containment: every hostile snippet is stopped, and the next call still works."""

from __future__ import annotations

import pytest

from jaxalign.tools import PythonSandbox
from tests.tools.helpers import SHORT_TIMEOUT_S, kill_tree, quiet_pool

HOSTILE = {
    "fork_bomb": "import os\nwhile True:\n    os.fork()",
    "memory_bomb": "x = bytearray(10 * 1024**3)",
    "memory_bomb_list": "x = [0] * (2 * 1024**3)",
    "infinite_loop": "while True:\n    pass",
    "long_sleep": "import time\ntime.sleep(1000)",
    "disk_fill": "with open('big.bin', 'wb') as f:\n    for _ in range(10 * 1024):\n        f.write(b'\\0' * 1024**2)",
    "many_files": "for i in range(10**6):\n    open(f'f{i}', 'wb').write(b'\\0' * 1024**2)",
    "output_flood": "import sys\nfor _ in range(100):\n    sys.stdout.write('x' * 1024**2)",
    "fd_exhaustion": "fs = [open('f', 'w') for _ in range(10**6)]",
    "background_daemon": "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(1000)",
}
MUST_TIME_OUT = ("infinite_loop", "long_sleep")  # run with a short limit; the rest with the generous default


def _next_call_works(sb: PythonSandbox) -> None:
    r = sb.run("print(sum(range(10)))")
    assert (r.ok, r.stdout) == (True, "45\n"), (r.error, r.stderr)


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_code_is_contained(sandbox: PythonSandbox, name: str) -> None:
    r = sandbox.run(HOSTILE[name], timeout_s=SHORT_TIMEOUT_S if name in MUST_TIME_OUT else None)
    assert not r.sandbox_failure, r.error
    if name == "background_daemon":
        assert r.ok  # the call itself is fine; the daemon is killed when the call ends
    elif name == "output_flood":
        assert r.truncated and r.error == "output truncated"
        assert len(r.stdout) < 2100 and r.stdout.endswith("[output truncated: 104855600 chars]")
    else:
        assert not r.ok and r.error
    if name in MUST_TIME_OUT:
        assert r.timed_out and r.error == "timeout"
    if name.startswith("memory_bomb"):
        assert r.memory_error and r.error == "memory limit"
    if name in ("disk_fill", "many_files"):
        assert "File too large" in r.error or "No space left" in r.error, r.error
    if name == "fork_bomb":
        assert "BlockingIOError" in r.error or r.timed_out, r.error
    _next_call_works(sandbox)


def test_nothing_survives_its_call(make_sandbox) -> None:
    sb = make_sandbox(workers=1)
    with sb.session() as s:
        r = s.run("import subprocess, sys\np = subprocess.Popen([sys.executable, '-c', 'import time; "
                  "time.sleep(1000)'], start_new_session=True)\np.pid")
        assert r.ok, r.stderr
        assert s.run("p.poll()").stdout == "-9\n"  # SIGKILLed when the cell that started it ended


@pytest.mark.parametrize("code,error", [
    ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", "crashed: killed by signal SIGKILL"),
    # os._exit skips the rest of the cell and its report: a crash whatever the code, 0 included
    # (sys.exit(0) raises SystemExit, which the cell catches: that is a normal end, see test_system_exit).
    ("import os\nprint('before')\nos._exit(0)\nprint('after')", "crashed: exited with code 0 without finishing"),
    ("import os\nos._exit(3)", "crashed: exited with code 3 without finishing"),
    ("import ctypes\nctypes.string_at(0)", "crashed: killed by signal SIGSEGV"),
])
def test_crashing_code_is_reported_and_replaced(make_sandbox, code: str, error: str) -> None:
    sb = make_sandbox()
    r = sb.run(code)
    assert (r.ok, r.crashed, r.error, r.sandbox_failure) == (False, True, error, False)
    assert r.stdout == ("before\n" if "before" in code else "")  # what it printed until then is kept
    _next_call_works(sb)
    assert sb.stats()["crashes"] == 1
    with sb.session() as s:
        s.run("x = 1")
        r = s.run(code)
        assert (r.ok, r.crashed, r.error) == (False, True, error)
        r = s.run("print('x' in globals())")
        assert r.ok and r.state_lost and "session was restarted" in r.stderr and r.stdout == "False\n"
    assert sb.stats()["workers_restarted"] >= 1


def test_session_restarts_after_timeout_and_memory_error(make_sandbox) -> None:
    sb = make_sandbox()
    with sb.session() as s:
        s.run("x = 41")
        r = s.run("x = bytearray(10 * 1024**3)")
        assert r.memory_error
        assert s.run("x + 1").stdout == "42\n"  # a MemoryError does not kill the session process
        assert s.run("while True: pass", timeout_s=SHORT_TIMEOUT_S).timed_out
        r = s.run("print('x' in globals())")
        assert r.ok and r.state_lost and r.stdout == "False\n"
        assert "restarted" in r.stderr and "timeout" in r.stderr
        assert s.run("y = 1").ok and not s.run("y").state_lost
    assert sb.stats()["workers_restarted"] == 1


def test_killed_worker_is_replaced(make_sandbox) -> None:
    sb = make_sandbox(workers=1)
    _next_call_works(sb)
    with quiet_pool(sb) as workers:  # all of them: one still starting would escape the kill
        pass
    for w in workers:  # white-box: kill the servers themselves, as an OOM killer might
        kill_tree(w.proc.pid)
        w.proc.wait()
    _next_call_works(sb)
    assert sb.stats()["workers_restarted"] >= 1
    assert sb.stats()["sandbox_failures"] == 0  # an idle dead worker is replaced before use


def test_worker_killed_during_a_session_loses_state_once(make_sandbox) -> None:
    sb = make_sandbox(workers=1)
    with sb.session() as s:
        s.run("x = 1")
        kill_tree(s._worker.proc.pid)
        s._worker.proc.wait()  # dead before the next call, not merely signalled
        r = s.run("x")
        assert r.sandbox_failure and r.error.startswith("sandbox failure: worker")
        r = s.run("print('x' in globals())")
        assert r.ok and r.state_lost and r.stdout == "False\n"
